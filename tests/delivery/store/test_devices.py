"""Device rows: registered, disabled, re-registered (and re-owned) by token."""

from __future__ import annotations

from delivery.clock import utcnow
from delivery.store import Store
from delivery.store.devices import devices_of
from tests.support.devices import disable


def test_devices_register_disable_reregister(store: Store) -> None:
    now = utcnow()
    store.register_device("bob", "tok-1", "android", now)
    store.register_device("bob", "tok-2", "ios", now)
    assert [d.token for d in devices_of(store, "bob", include_disabled=False)] == ["tok-1", "tok-2"]
    assert disable(store, "tok-1", "UNREGISTERED", now)
    assert not disable(store, "tok-1", "UNREGISTERED", now)
    assert [d.token for d in devices_of(store, "bob", include_disabled=False)] == ["tok-2"]
    assert [d.token for d in devices_of(store, "bob")] == ["tok-1", "tok-2"]
    store.register_device("carol", "tok-1", "android", now)  # token moved to another user
    assert [d.token for d in devices_of(store, "carol", include_disabled=False)] == ["tok-1"]
