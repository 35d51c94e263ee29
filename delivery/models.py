"""The durable store's schema (SQLAlchemy 2.x typed models). Alembic migrations mirror it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Re-exported: the store's states are the vocabulary's (defined in delivery.vocabulary).
from delivery.vocabulary import IN_FLIGHT as IN_FLIGHT
from delivery.vocabulary import UNACKED as UNACKED
from delivery.vocabulary import Kind
from delivery.vocabulary import State as State

ID_LEN = 128
# A direct conversation's id escapes both user ids ("dm:" + two percent-encoded ids): a
# 4-byte character encodes to 12, so 3 + 2 x ID_LEN x 12 + 1 (migration 0003).
CONV_ID_LEN = 3 + 2 * ID_LEN * 12 + 1


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use UTC-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


_unacked_sql = "state IN ({})".format(", ".join(f"'{s}'" for s in UNACKED))
_in_flight_sql = "state IN ({})".format(", ".join(f"'{s}'" for s in IN_FLIGHT))


class Message(Base):
    __tablename__ = "messages"

    # Monotonic per database: replay order ("oldest first") without clock ties.
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    sender: Mapped[str] = mapped_column(String(ID_LEN))
    recipient: Mapped[str] = mapped_column(String(ID_LEN))
    client_msg_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    body: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16), default=State.ACCEPTED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    ack_deadline: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    delivered_conn: Mapped[str | None] = mapped_column(String(ID_LEN))
    pushed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    # Conversations (0002): a row is a message (direct, or one recipient's copy of a group
    # message whose id is ``parent``) or a receipt for ``parent`` (addressed to its sender).
    kind: Mapped[str] = mapped_column(String(8), default=Kind.MESSAGE,
                                      server_default=Kind.MESSAGE.value)
    conversation_id: Mapped[str | None] = mapped_column(String(CONV_ID_LEN))
    conv_seq: Mapped[int | None] = mapped_column(BigInteger)
    conv_prev: Mapped[int | None] = mapped_column(BigInteger)
    parent: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    __table_args__ = (
        UniqueConstraint("sender", "client_msg_id", name="uq_messages_sender_client_msg_id"),
        # A recipient's place in a conversation: ``prev`` at insert, ``read`` frames.
        Index("ix_messages_conversation", "conversation_id", "recipient", "conv_seq"),
        # A group message's recipient rows (inspect, routing a stored group message).
        Index("ix_messages_parent", "parent"),
        # Replay: a user's unacked messages in order.
        Index(
            "ix_messages_replay", "recipient", "seq",
            postgresql_where=text(_unacked_sql), sqlite_where=text(_unacked_sql),
        ),
        # Recovery: messages whose ack deadline has passed without an outcome.
        Index(
            "ix_messages_deadline", "ack_deadline",
            postgresql_where=text(_in_flight_sql), sqlite_where=text(_in_flight_sql),
        ),
    )


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    message_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(8))  # a Channel
    node: Mapped[str | None] = mapped_column(String(ID_LEN))
    conn: Mapped[str | None] = mapped_column(String(ID_LEN))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    # a Result, or FCM_PREFIX + FCM's code for one device (delivery.vocabulary)
    result: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    user_id: Mapped[str] = mapped_column(String(ID_LEN), index=True)
    token: Mapped[str] = mapped_column(String(4096), unique=True)
    platform: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(String(64))


class Conversation(Base):
    """A conversation and its seq counter: every message takes ``last_seq + 1`` in the
    transaction that stores it (the row lock orders concurrent senders)."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(CONV_ID_LEN), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # a ConversationKind
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime]


class ConversationMember(Base):
    """One membership span: the member receives the messages with
    ``joined_seq < seq <= left_seq`` (``left_seq`` NULL: still a member)."""

    __tablename__ = "conversation_members"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    conversation_id: Mapped[str] = mapped_column(
        String(CONV_ID_LEN), ForeignKey("conversations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(ID_LEN))
    joined_seq: Mapped[int] = mapped_column(BigInteger)
    left_seq: Mapped[int | None] = mapped_column(BigInteger)
    read_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    joined_at: Mapped[datetime]
    left_at: Mapped[datetime | None]

    __table_args__ = (
        # At most one current span per member.
        Index("uq_conversation_members_current", "conversation_id", "user_id", unique=True,
              postgresql_where=text("left_seq IS NULL"), sqlite_where=text("left_seq IS NULL")),
        Index("ix_conversation_members_user", "user_id"),
    )


class ConversationMessage(Base):
    """A group message, once (its recipients' rows are in ``messages`` with ``parent`` = id):
    its seq, its recipient count and the counters the coalesced receipts are cut from."""

    __tablename__ = "conversation_messages"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        String(CONV_ID_LEN), ForeignKey("conversations.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    sender: Mapped[str] = mapped_column(String(ID_LEN))
    client_msg_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    recipients: Mapped[int] = mapped_column(Integer)
    delivered: Mapped[int] = mapped_column(Integer, default=0)
    read: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("conversation_id", "seq", name="uq_conversation_messages_seq"),
        UniqueConstraint("sender", "client_msg_id",
                         name="uq_conversation_messages_sender_client_msg_id"),
    )
