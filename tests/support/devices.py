"""Disabling a device token the way a rejected push does (tests set that state up directly)."""

from __future__ import annotations

from datetime import datetime

from delivery.store import Store
from delivery.store.devices import disable_device


def disable(store: Store, token: str, reason: str, now: datetime) -> bool:
    """True if the token was active."""
    with store.engine.begin() as c:
        return disable_device(c, token, reason, now)
