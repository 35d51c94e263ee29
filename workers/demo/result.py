"""What one demo run observed: the figures the report shows and ``--json`` prints."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class GroupResult:
    """The group conversations' part: counted per recipient (a delivery id each)."""

    conversations: int
    members: list[int]  # per conversation
    messages: int
    recipient_deliveries: int
    shown: int
    lost: int
    lost_ids: list[str]
    shown_late: int  # shown after later seqs, their gap skipped at the client's bound
    out_of_order: int  # shown in order (not late) yet below a seq shown before: must be 0
    final_states: dict[str, int]
    receipt_frames: dict[str, int]  # receipts the senders' clients got, by status
    messages_without_all_delivered_receipts: int
    messages_with_read_receipts: int


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
    groups: GroupResult | None = None

    @property
    def passed(self) -> bool:
        """Nothing lost, acked twice or pushed twice, group messages included, and every
        group member shown its messages in seq order (the demo's exit status)."""
        groups_ok = self.groups is None or (self.groups.lost == 0
                                            and self.groups.out_of_order == 0)
        return (self.lost == 0 and self.duplicate_outcomes == 0 and self.duplicate_pushes == 0
                and groups_ok)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
