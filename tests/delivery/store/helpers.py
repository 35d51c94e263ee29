"""Storing a test message in one call."""

from __future__ import annotations

from datetime import timedelta

from delivery.clock import utcnow
from delivery.store import Store
from delivery.validation import message_id_for


def accept(store: Store, recipient: str = "bob", cmid: str | None = None, sender: str = "alice",
           body: object = None, deadline_s: float = 5.0):  # type: ignore[no-untyped-def]
    now = utcnow()
    return store.accept(
        message_id=message_id_for(sender, cmid), sender=sender, recipient=recipient,
        body=body if body is not None else {"text": "hi"}, client_msg_id=cmid, now=now,
        ttl_s=60, deadline=now + timedelta(seconds=deadline_s),
    )
