"""The ``delivery.push`` task on a real Celery worker subprocess (PostgreSQL + Redis),
firebase-admin aimed at the stub running in this test process."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from celery import Celery

from delivery.celery_app import make_app
from delivery.models import State
from delivery.push.fcm import token_ref
from delivery.push.stub import FcmStub
from delivery.settings import Settings
from delivery.store import Store
from delivery.store.devices import devices_of
from tests.delivery.push.conftest import dispatch
from workers.devkit.procs import Proc, celery_worker
from workers.devkit.services import ServiceEnv

pytestmark = pytest.mark.slow


@pytest.fixture
def worker_env(services: ServiceEnv, stub: FcmStub) -> dict[str, str]:
    return services.env(
        DELIVERY_FCM_URL=stub.url, DELIVERY_FCM_PROJECT="p", DELIVERY_PUSH_MAX_RETRIES="2",
        DELIVERY_RETRY_BACKOFF_S="0.1",
    )


@pytest.fixture
def worker(worker_env: dict[str, str]) -> Iterator[Proc]:
    # delivery.celery_app includes only delivery.tasks; load the push tasks explicitly.
    proc = celery_worker(worker_env, "push", extra=["--include", "delivery.push.tasks"])
    yield proc
    proc.stop()


@pytest.fixture
def client(worker_env: dict[str, str]) -> Iterator[Celery]:
    app = make_app(Settings.from_env(worker_env))
    yield app
    app.close()


def _state(store: Store, mid: str) -> str | None:
    msg = store.get(uuid.UUID(mid))
    return None if msg is None else msg.state


def test_push_task_on_worker(
    worker: Proc, client: Celery, stub: FcmStub, pg_store: Store
) -> None:
    store = pg_store
    now = time.time()
    from delivery.clock import utcnow

    store.register_device("bob", "tok-ok", "android", utcnow())
    store.register_device("bob", "tok-flaky", "ios", utcnow())
    store.register_device("bob", "tok-dead", "android", utcnow())
    stub.fail_token("tok-flaky", "UNAVAILABLE", retry_after=1)
    stub.fail_token("tok-dead", "UNREGISTERED")

    # 1. 503 with Retry-After 1 on one device, then success: retried after >= 1 s, each device
    #    accepted exactly once, the dead token disabled and never retried.
    mid, attempt = dispatch(store)
    client.send_task("delivery.push", kwargs={"message_id": mid, "attempt": attempt})
    worker.wait_until(lambda: len(stub.sends_to("tok-flaky")) == 1, timeout=20)
    stub.fail_token("tok-flaky", None)
    worker.wait_until(lambda: _state(store, mid) == State.PUSHED, timeout=20)
    flaky = stub.sends_to("tok-flaky")
    assert len(flaky) == 2
    assert flaky[1]["at"] - flaky[0]["at"] >= 0.95  # honoured Retry-After
    assert len(stub.sends_to("tok-ok", ok_only=True)) == 1
    assert len(stub.sends_to("tok-dead")) == 1
    active = devices_of(store, "bob", include_disabled=False)
    assert [d.token for d in active] == ["tok-ok", "tok-flaky"]
    # a duplicate delivery of the same task changes nothing
    res = client.send_task("delivery.push", kwargs={"message_id": mid, "attempt": attempt})
    assert res.get(timeout=20) == "skipped"
    assert len(stub.sends_to("tok-ok")) == 1

    # 2. 429 on every send: retries bounded by DELIVERY_PUSH_MAX_RETRIES=2, then pending.
    stub.reset()
    stub.fail_token("tok-ok", "QUOTA_EXCEEDED", retry_after=0)
    stub.fail_token("tok-flaky", "QUOTA_EXCEEDED")
    mid2, attempt2 = dispatch(store)
    res = client.send_task("delivery.push", kwargs={"message_id": mid2, "attempt": attempt2})
    assert res.get(timeout=30) == "failed"
    msg = store.get(uuid.UUID(mid2))
    assert msg is not None and msg.state == State.PENDING
    assert msg.last_error == "push failed after retries: QUOTA_EXCEEDED"
    assert len(stub.sends_to("tok-ok")) == 3  # first run + 2 retries
    rows = [a for a in store.attempts_of(uuid.UUID(mid2)) if a.conn == token_ref("tok-ok")]
    assert [a.result for a in rows] == ["fcm:QUOTA_EXCEEDED"] * 3

    # 3. no device: pending with the reason, recorded on the attempt.
    mid3, attempt3 = dispatch(store, recipient="nobody")
    res = client.send_task("delivery.push", kwargs={"message_id": mid3, "attempt": attempt3})
    assert res.get(timeout=20) == "no_device"
    msg = store.get(uuid.UUID(mid3))
    assert msg is not None and msg.state == State.PENDING and msg.last_error == "no active device"
    assert [a.result for a in store.attempts_of(uuid.UUID(mid3))] == ["no_device"]
    assert time.time() - now < 60


def test_register_device_task(worker: Proc, client: Celery, pg_store: Store) -> None:
    res = client.send_task(
        "delivery.register_device", kwargs={"user": "carol", "token": "t-1", "platform": "web"})
    out = res.get(timeout=20)
    assert out["user"] == "carol" and out["platform"] == "web" and out["disabled_at"] is None
    assert [d.token for d in devices_of(pg_store, "carol", include_disabled=False)] == ["t-1"]
    bad = client.send_task(
        "delivery.register_device", kwargs={"user": "carol", "token": "t-2", "platform": "tv"})
    with pytest.raises(Exception, match="invalid platform"):
        bad.get(timeout=20)
