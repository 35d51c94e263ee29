"""Device rows (``devices``): a user's FCM registration tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, select, update
from sqlalchemy.engine import Connection

from delivery.store.base import StoreBase
from delivery.store.records import DeviceRecord
from delivery.store.tables import DEVICE_COLUMNS, devices


def devices_query(user: str, *, include_disabled: bool) -> Select[Any]:
    """A user's devices, oldest registration first."""
    q = select(*DEVICE_COLUMNS).where(devices.c.user_id == user).order_by(devices.c.id)
    return q if include_disabled else q.where(devices.c.disabled_at.is_(None))


def disable_device(c: Connection, token: str, reason: str, now: datetime) -> bool:
    """Stop pushing to ``token`` (FCM rejected it). True if it was active."""
    return c.execute(
        update(devices).where(devices.c.token == token, devices.c.disabled_at.is_(None))
        .values(disabled_at=now, disabled_reason=reason)
    ).rowcount == 1


class DeviceQueries(StoreBase):
    def register_device(self, user: str, token: str, platform: str, now: datetime) -> DeviceRecord:
        """Register (or re-activate and re-own) an FCM token for ``user``."""
        stmt = self._upsert(devices).values(
            user_id=user, token=token, platform=platform, created_at=now, last_seen_at=now,
        ).on_conflict_do_update(
            index_elements=["token"],
            set_={"user_id": user, "platform": platform, "last_seen_at": now,
                  "disabled_at": None, "disabled_reason": None},
        ).returning(*DEVICE_COLUMNS)
        with self.engine.begin() as c:
            row = c.execute(stmt).one()
        return DeviceRecord(*row)


def devices_of(store: StoreBase, user: str, *,
               include_disabled: bool = True) -> list[DeviceRecord]:
    with store.engine.connect() as conn:
        rows = conn.execute(devices_query(user, include_disabled=include_disabled)).all()
    return [DeviceRecord(*r) for r in rows]


def remove_device(store: StoreBase, token: str) -> bool:
    """Delete a device row (the user logged out on it). True if it existed."""
    with store.engine.begin() as c:
        return bool(c.execute(delete(devices).where(devices.c.token == token)).rowcount)
