"""Acking one message the way a gateway does (the store's bulk ack path, a batch of one)."""

from __future__ import annotations

import uuid
from datetime import datetime

from delivery.store import Store
from delivery.store.acks import record_acks_bulk


def ack(store: Store, msg_id: uuid.UUID, user: str, conn_id: str, now: datetime) -> bool:
    """True if this ack delivered the message."""
    return record_acks_bulk(store, [(msg_id, user, conn_id)], now)[0]
