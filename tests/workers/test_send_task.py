"""delivery.send on a real worker subprocess, the real Redis broker and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from celery import Celery

from delivery.celery_app import make_app
from delivery.settings import Settings
from delivery.store import Store
from delivery.validation import message_id_for
from workers.devkit.procs import Proc, celery_worker
from workers.devkit.services import ServiceEnv


@pytest.fixture
def client_app(services: ServiceEnv) -> Iterator[Celery]:
    settings = Settings.from_env(services.env())
    app = make_app(settings)
    yield app
    app.close()


@pytest.fixture
def worker(services: ServiceEnv) -> Iterator[Proc]:
    proc = celery_worker(services.env(), concurrency=8)
    yield proc
    proc.stop()


def test_fifty_concurrent_duplicates_store_one_row(
    client_app: Celery, worker: Proc, pg_store: Store
) -> None:
    for i in range(50):
        client_app.send_task("delivery.send", kwargs={
            "sender": "alice", "recipient": "bob", "body": {"text": f"copy {i}"},
            "client_msg_id": "same-1"})
    # Wait until the worker has run all 50 (its log counts them), then look at the table.
    worker.wait_until(lambda: worker.log().count("succeeded in") >= 50, timeout=60)
    assert sum(pg_store.count_by_state().values()) == 1
    stored = pg_store.get(message_id_for("alice", "same-1"))
    assert stored is not None and stored.body["text"].startswith("copy ")


def test_invalid_send_fails_fast_naming_the_field_and_stores_nothing(
    client_app: Celery, worker: Proc, pg_store: Store
) -> None:
    started = time.monotonic()
    result = client_app.send_task("delivery.send", kwargs={
        "sender": "alice", "recipient": "", "body": {"text": "x"}})
    with pytest.raises(Exception, match="recipient") as info:
        result.get(timeout=30)
    assert isinstance(info.value, ValueError)
    assert "invalid recipient" in str(info.value)
    assert time.monotonic() - started < 10
    oversized = client_app.send_task("delivery.send", kwargs={
        "sender": "alice", "recipient": "bob", "body": "x" * 100_000})
    with pytest.raises(Exception, match="body"):
        oversized.get(timeout=30)
    assert pg_store.count_by_state() == {}
    assert "Retry" not in worker.log()
