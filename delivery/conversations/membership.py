"""Membership by seq: who receives a conversation's message number ``seq``.

A membership span records the conversation's ``last_seq`` when the member joined and when it
left; the member receives exactly the messages with ``joined_seq < seq <= left_seq`` (no
``left_seq``: still a member). Sends and membership changes take the same row lock on the
conversation, so every message is either before or after a change, never both.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

from delivery.conversations.ids import ConversationError


class Span(NamedTuple):
    joined_seq: int
    left_seq: int | None


def receives(span: Span, seq: int) -> bool:
    return span.joined_seq < seq and (span.left_seq is None or seq <= span.left_seq)


def recipients(current: Collection[str], sender: str) -> list[str]:
    """A message's recipients: the current members but its sender (who must be one)."""
    if sender not in current:
        raise ConversationError("sender", f"{sender!r} is not a member of the conversation")
    return sorted(u for u in current if u != sender)


def check_add(current: Collection[str], users: Collection[str], limit: int) -> list[str]:
    """The users to add (those not already members, once each); too many members: nothing is
    added."""
    new = [u for u in dict.fromkeys(users) if u not in current]
    if len(current) + len(new) > limit:
        raise ConversationError(
            "members", f"the conversation would have {len(current) + len(new)} members, more "
            f"than DELIVERY_MAX_CONVERSATION_MEMBERS ({limit})")
    return new


def check_create(users: Collection[str], limit: int) -> None:
    if not users:
        raise ConversationError("members", "a conversation needs at least one member")
    check_add((), users, limit)
