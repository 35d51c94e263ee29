"""Receipts for a group message's sender: which to produce, and their stored payloads.

Small groups (at most ``RECEIPT_SINGLE_MAX`` recipients) get one receipt per recipient and
status ("single form", with ``user``). Larger ones get the coalesced form (``count`` of
``of``), produced only when a message's counter reaches a milestone, so a message costs its
sender at most ``len(milestones(of))`` receipts per status whatever the group's size. Counters
are exact (an ``UPDATE ... RETURNING`` in the store gives each ack batch the value before and
after its own increment), so every milestone is crossed by exactly one batch.
"""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

RECEIPT_SINGLE_MAX = 20
DELIVERED = "delivered"
READ = "read"
RECEIPT_NAMESPACE = uuid.UUID("0b7e7a52-6d0a-4f43-8f2c-3c1d1f6f9e11")


class Receipt(NamedTuple):
    id: uuid.UUID
    to: str  # the sender of the message: the receipt's recipient
    payload: dict[str, Any]  # the frame's fields but type and id


def coalesced(of: int) -> bool:
    return of > RECEIPT_SINGLE_MAX


def milestones(of: int) -> tuple[int, ...]:
    """1, a quarter, a half, three quarters and all of ``of`` (rounded up; distinct)."""
    if of <= 0:
        return ()
    marks = {1, -(-of // 4), -(-of // 2), -(-3 * of // 4), of}
    return tuple(sorted(marks))


def crossed(before: int, after: int, of: int) -> list[int]:
    """The milestones in ``(before, after]``."""
    return [m for m in milestones(of) if before < m <= after]


def single_id(message: uuid.UUID, status: str, user: str) -> uuid.UUID:
    return uuid.uuid5(RECEIPT_NAMESPACE, f"{message}\x00{status}:{user}")


def milestone_id(message: uuid.UUID, status: str, mark: int) -> uuid.UUID:
    return uuid.uuid5(RECEIPT_NAMESPACE, f"{message}\x00{status}#{mark}")


def single(message: uuid.UUID, conversation: str, seq: int, sender: str, status: str,
           user: str) -> Receipt:
    """``user`` got (or read up to) ``message``."""
    return Receipt(single_id(message, status, user), sender, {
        "message": str(message), "conversation": conversation, "seq": seq, "status": status,
        "user": user})


def counted(message: uuid.UUID, conversation: str, seq: int, sender: str, status: str,
            before: int, after: int, of: int) -> list[Receipt]:
    """The coalesced receipts of a counter moving from ``before`` to ``after`` (at most one:
    several milestones crossed at once are reported by the newest)."""
    marks = crossed(before, after, of)
    if not marks:
        return []
    return [Receipt(milestone_id(message, status, marks[-1]), sender, {
        "message": str(message), "conversation": conversation, "seq": seq, "status": status,
        "count": after, "of": of})]
