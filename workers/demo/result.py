"""What one demo run observed: the figures the report shows and ``--json`` prints."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Result:
    messages: int
    # States when traffic had settled, before every user reconnected.
    delivered_ws: int
    pushed: int
    pending: int
    expired: int
    in_flight_at_end: int
    replayed_in_final_phase: int
    lost: int
    lost_ids: list[str]
    duplicate_frames: int  # frames shown twice on the wire, deduplicated by the clients
    duplicate_outcomes: int
    duplicate_pushes: int
    forced_races: int
    reconnects: int
    final_states: dict[str, int]
    latency_ms: dict[str, float]  # p50, p99, max of send -> display, online recipients
    elapsed_s: float

    @property
    def passed(self) -> bool:
        """Nothing lost, acked twice or pushed twice (the demo's exit status)."""
        return self.lost == 0 and self.duplicate_outcomes == 0 and self.duplicate_pushes == 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
