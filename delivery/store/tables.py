"""The tables the store reads and writes, by their real names, and the columns each record
type selects (in the record's field order, so a row unpacks straight into it)."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Column, Table

from delivery.models import (
    Conversation,
    ConversationMember,
    ConversationMessage,
    DeliveryAttempt,
    Device,
    Message,
)
from delivery.store.records import (
    AttemptRecord,
    ConversationRecord,
    DeviceRecord,
    MemberRecord,
    MessageRecord,
)

messages = cast(Table, Message.__table__)
attempts = cast(Table, DeliveryAttempt.__table__)
devices = cast(Table, Device.__table__)
conversations = cast(Table, Conversation.__table__)
members = cast(Table, ConversationMember.__table__)
conv_messages = cast(Table, ConversationMessage.__table__)

MESSAGE_COLUMNS: list[Column[Any]] = [messages.c[n] for n in MessageRecord.__dataclass_fields__]
ATTEMPT_COLUMNS: list[Column[Any]] = [attempts.c[n] for n in AttemptRecord.__dataclass_fields__]
DEVICE_COLUMNS: list[Column[Any]] = [devices.c[n] for n in DeviceRecord.__dataclass_fields__]
CONVERSATION_COLUMNS: list[Column[Any]] = [
    conversations.c[n] for n in ConversationRecord.__dataclass_fields__]
MEMBER_COLUMNS: list[Column[Any]] = [members.c[n] for n in MemberRecord.__dataclass_fields__]
