"""What the store returns: frozen rows, detached from any connection."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any


def _json_fields(record: Any) -> dict[str, Any]:
    """A record's fields as JSON-friendly values (UUIDs and datetimes as strings)."""
    out: dict[str, Any] = {}
    for name in record.__dataclass_fields__:
        value = getattr(record, name)
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        out[name] = value
    return out


@dataclass(frozen=True)
class MessageRecord:
    id: uuid.UUID
    seq: int
    sender: str
    recipient: str
    client_msg_id: str | None
    body: Any
    created_at: datetime
    expires_at: datetime
    state: str
    attempts: int
    ack_deadline: datetime | None
    delivered_at: datetime | None
    delivered_conn: str | None
    pushed_at: datetime | None
    last_error: str | None
    # Conversations (docs/routing.md): kind ("message" or "receipt"), the conversation, the
    # message's seq in it, the recipient's previous seq, the group message (or, for a
    # receipt, the message it is about).
    kind: str = "message"
    conversation_id: str | None = None
    conv_seq: int | None = None
    conv_prev: int | None = None
    parent: uuid.UUID | None = None

    def as_dict(self) -> dict[str, Any]:
        return _json_fields(self)

    @property
    def message_id(self) -> uuid.UUID:
        """The id the sender got back: the group message's, or this row's own."""
        return self.parent if self.parent is not None and self.kind == "message" else self.id


@dataclass(frozen=True)
class ConversationRecord:
    id: str
    kind: str
    last_seq: int
    created_at: datetime


@dataclass(frozen=True)
class MemberRecord:
    user_id: str
    joined_seq: int
    left_seq: int | None
    read_seq: int
    joined_at: datetime
    left_at: datetime | None


@dataclass(frozen=True)
class AttemptRecord:
    id: int
    message_id: uuid.UUID
    attempt: int
    channel: str
    node: str | None
    conn: str | None
    started_at: datetime
    finished_at: datetime | None
    result: str | None
    detail: str | None

    def as_dict(self) -> dict[str, Any]:
        return _json_fields(self)


@dataclass(frozen=True)
class DeviceRecord:
    id: int
    user_id: str
    token: str
    platform: str
    created_at: datetime
    last_seen_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None


@dataclass(frozen=True)
class Target:
    """One connection a frame goes to in an attempt."""

    node: str
    conn: str
