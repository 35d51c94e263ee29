"""Overload, defined: more than DELIVERY_API_MAX_IN_FLIGHT sends of this process are being
stored at once (each holds a database connection and a thread until its commit and publish
end). One more is refused at once with 429 and ``Retry-After`` rather than queued, so a slow
or failing database shows up as fast refusals, not as a growing backlog of open requests.

Pure: a counter the shell enters and leaves (one asyncio loop: no lock needed).
"""

from __future__ import annotations

from dataclasses import dataclass

RETRY_AFTER_S = 1  # what a refused producer is told to wait (seconds, the header's unit)


@dataclass
class Admission:
    limit: int
    in_flight: int = 0
    refused: int = 0

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")

    def enter(self) -> bool:
        """Admit one more send (True), or refuse it (False: answer 429)."""
        if self.in_flight >= self.limit:
            self.refused += 1
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        if self.in_flight <= 0:
            raise RuntimeError("leave() without enter()")
        self.in_flight -= 1
