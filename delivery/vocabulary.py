"""The pipeline's words, defined once: message states, attempt channels and attempt results.

Plain ``StrEnum`` members (each is its string, so they compare, hash, format and bind to SQL
like the literals they replace), with no imports, so the pure routing policy and the
simulation use them without pulling in the store. Celery task names: ``delivery.task_names``.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    ACCEPTED = "accepted"  # stored, not yet routed
    DISPATCHED = "dispatched"  # a frame is out, awaiting an ack
    DELIVERED = "delivered"  # a live connection acked it (final)
    PUSHED = "pushed"  # FCM accepted a push; still replayed until acked
    PENDING = "pending"  # no channel right now; waits for replay
    EXPIRED = "expired"  # TTL passed with no channel; still replayable until purged


# States in which a message is still owed to its recipient (replayed on connect).
UNACKED: tuple[str, ...] = (
    State.ACCEPTED, State.DISPATCHED, State.PUSHED, State.PENDING, State.EXPIRED,
)
# States that routing still owns: an ack deadline applies and the recovery sweep watches them;
# anything else (delivered, pushed, pending, expired) is settled.
IN_FLIGHT: tuple[str, ...] = (State.ACCEPTED, State.DISPATCHED)


class Channel(StrEnum):
    """How an attempt reaches the recipient (``delivery_attempts.channel``)."""

    WS = "ws"  # a frame to live WebSocket connections
    PUSH = "push"  # Firebase Cloud Messaging


# Push attempt rows hold FCM's answer per device: this prefix and the code (``fcm:ok``,
# ``fcm:UNREGISTERED``, ...).
FCM_PREFIX = "fcm:"


class Result(StrEnum):
    """How an attempt row ended (``delivery_attempts.result``), besides ``fcm:<code>``."""

    ACKED = "acked"  # this connection acked: the message is delivered
    SUPERSEDED = "superseded"  # another connection of the same attempt acked first
    NACKED = "nacked"  # the gateway no longer had the connection (or none listened)
    TIMEOUT = "timeout"  # the ack deadline passed
    FCM_OK = FCM_PREFIX + "ok"  # FCM accepted the push for this device
    PUSHED = "pushed"  # the push attempt's summary: at least one device accepted
    NO_DEVICE = "no_device"  # the push attempt's summary: the recipient has no device
    PUSH_FAILED = "push_failed"  # the push attempt's summary: every device failed


class Kind(StrEnum):
    """What a ``messages`` row carries to its recipient (``messages.kind``)."""

    MESSAGE = "message"  # a message (direct, or one recipient's copy of a group message)
    RECEIPT = "receipt"  # a receipt for a message the recipient sent (never pushed)


class ConversationKind(StrEnum):
    DIRECT = "dm"  # the two-member conversation of send_message (no member rows)
    GROUP = "group"  # created with create_conversation; members recorded by seq
