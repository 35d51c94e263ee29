"""Presence timing and size configuration (validated)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PresenceConfig"]


@dataclass(frozen=True, slots=True)
class PresenceConfig:
    """Timers (seconds) and limits of a presence replica.

    ``sync_wait_s`` defaults to two heartbeats plus 100 ms and
    ``transfer_timeout_s`` to four heartbeats (at least 0.5 s). Invalid values
    raise :class:`ValueError` naming the offending field.
    """

    heartbeat_s: float = 0.25
    down_s: float = 3.0
    purge_s: float = 60.0
    batch_s: float = 0.005
    sync_wait_s: float | None = None
    transfer_timeout_s: float | None = None
    max_frame_bytes: int = 32 * 1024 * 1024
    chunk_entries: int = 20_000
    log_size: int = 4096

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"{name}: {why} (got {getattr(self, name)!r})")

        for name in ("heartbeat_s", "down_s", "purge_s", "batch_s"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise bad(name, "must be a finite number >= 0")
        if self.heartbeat_s <= 0:
            raise bad("heartbeat_s", "must be > 0")
        if self.down_s <= 2 * self.heartbeat_s:
            raise bad("down_s", f"must be > 2 * heartbeat_s = {2 * self.heartbeat_s}")
        if self.purge_s <= self.down_s:
            raise bad("purge_s", f"must be > down_s = {self.down_s}")
        if self.batch_s >= self.heartbeat_s:
            raise bad("batch_s", "must be < heartbeat_s")
        if self.sync_wait_s is None:
            object.__setattr__(self, "sync_wait_s", 2 * self.heartbeat_s + 0.1)
        elif not math.isfinite(self.sync_wait_s) or self.sync_wait_s <= 0:
            raise bad("sync_wait_s", "must be > 0")
        if self.transfer_timeout_s is None:
            object.__setattr__(self, "transfer_timeout_s", max(4 * self.heartbeat_s, 0.5))
        elif not math.isfinite(self.transfer_timeout_s) or self.transfer_timeout_s <= 0:
            raise bad("transfer_timeout_s", "must be > 0")
        if self.max_frame_bytes < 1024:
            raise bad("max_frame_bytes", "must be >= 1024")
        if self.chunk_entries < 1:
            raise bad("chunk_entries", "must be >= 1")
        if self.log_size < 0:
            raise bad("log_size", "must be >= 0")

    @property
    def sync_wait(self) -> float:
        assert self.sync_wait_s is not None
        return self.sync_wait_s

    @property
    def transfer_timeout(self) -> float:
        assert self.transfer_timeout_s is not None
        return self.transfer_timeout_s
