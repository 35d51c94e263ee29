"""Conversation ids: the application's group ids and the derived id of a direct conversation."""

from __future__ import annotations

import uuid
from urllib.parse import quote, unquote

from delivery.validation import InvalidMessage, _check_id

DM_PREFIX = "dm:"


class ConversationError(InvalidMessage):
    """A conversation request that cannot be carried out (unknown conversation, a sender who
    is not a member, too many members...): nothing was stored."""


def dm_conversation_id(a: str, b: str) -> str:
    """The direct conversation of two users: ``dm:`` and both ids, sorted and percent-encoded
    (``:`` and ``%`` included), so distinct pairs never share an id."""
    lo, hi = sorted((a, b))
    return DM_PREFIX + quote(lo, safe="") + ":" + quote(hi, safe="")


def dm_members(conv_id: str) -> tuple[str, str] | None:
    """The two users of a direct conversation id, or None if it is not one."""
    if not conv_id.startswith(DM_PREFIX):
        return None
    parts = conv_id[len(DM_PREFIX):].split(":")
    if len(parts) != 2:
        return None
    return unquote(parts[0]), unquote(parts[1])


def check_group_id(conv_id: object) -> str:
    """A valid group conversation id (1..128 characters, no control characters, not ``dm:``)."""
    cid = _check_id("conversation", conv_id)
    assert cid is not None
    if cid.startswith(DM_PREFIX):
        raise ConversationError("conversation", f"ids starting with {DM_PREFIX!r} are reserved "
                                "for direct conversations (send_message)")
    return cid


def check_users(field: str, users: object) -> list[str]:
    """Distinct valid user ids, in the order given (duplicates dropped)."""
    if isinstance(users, str) or not isinstance(users, list | tuple | set | frozenset):
        raise ConversationError(field, "must be a list of user ids")
    out: dict[str, None] = {}
    for u in users:
        uid = _check_id(field, u)
        assert uid is not None
        out[uid] = None
    return list(out)


# A group message has one row per recipient in ``messages``, each with its own delivery id
# (what that recipient's client acks); the message id is what the sender got back.
DELIVERY_NAMESPACE = uuid.UUID("9d3c1a7e-2b4f-4e8a-b6c5-1f0e2d3c4b5a")


def delivery_id(message: uuid.UUID, user: str) -> uuid.UUID:
    return uuid.uuid5(DELIVERY_NAMESPACE, f"{message}\x00{user}")
