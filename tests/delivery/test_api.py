"""``send_message``: what the chat application calls. Its default must make the message
durable before returning the id, or raise; and it must reach the configured broker."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
import redis
from celery import Celery

from delivery.api import SendNotAccepted, send_message, stores_first
from delivery.celery_app import make_app
from delivery.settings import Settings
from delivery.store import Store
from delivery.validation import message_id_for
from workers.devkit.procs import ROOT
from workers.devkit.services import REDIS_URL, ServiceEnv, database_outage


def _queue_length(prefix: str) -> int:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return int(client.llen(f"{prefix}:celery:celery"))
    finally:
        client.close()


def test_default_send_in_a_fresh_process_stores_first_and_reaches_the_configured_broker(
    services: ServiceEnv, pg_store: Store,
) -> None:
    """A producer process configured only by DELIVERY_* variables, calling ``send_message``
    with no ``app``: the message is stored before the id is returned, and the task is on our
    broker (before: Celery's default app, publishing to amqp://guest@localhost//)."""
    code = ("from delivery.api import send_message\n"
            "print(send_message('alice', 'bob', {'text': 'hi'}, client_msg_id='fresh-1'))\n")
    out = subprocess.run([sys.executable, "-c", code], env=services.env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    msg_id = out.stdout.strip()
    assert msg_id == str(message_id_for("alice", "fresh-1"))
    stored = pg_store.get(uuid.UUID(msg_id))
    assert stored is not None and stored.state == "accepted"
    assert _queue_length(services.key_prefix) == 1


def test_a_send_during_a_database_outage_raises_and_enqueues_nothing(
    own_pg: tuple[str, Store], key_prefix: str,
) -> None:
    """Fault: the database refuses connections. Must hold: the default send raises (the app
    knows it was not accepted), nothing is stored and nothing enqueued; the same send
    retried after the outage is accepted once."""
    url, store = own_pg
    app: Celery = make_app(Settings(database_url=url, broker_url=REDIS_URL,
                                    redis_url=REDIS_URL, key_prefix=key_prefix))
    try:
        with database_outage(url), pytest.raises(SendNotAccepted, match="not accepted"):
            send_message("alice", "bob", {"text": "x"}, client_msg_id="o-1", app=app,
                         store=store)
        assert store.count_by_state() == {}
        assert _queue_length(key_prefix) == 0
        msg_id = send_message("alice", "bob", {"text": "x"}, client_msg_id="o-1", app=app,
                              store=store)
        assert store.count_by_state() == {"accepted": 1}
        assert msg_id == str(message_id_for("alice", "o-1"))
    finally:
        app.close()


def test_who_stores_first() -> None:
    assert stores_first(Settings())  # embedded: one process, one database
    assert stores_first(Settings(database_url="postgresql://h/d", broker_url="redis://h/0",
                                 redis_url="redis://h/0"))
    assert not stores_first(Settings(broker_url="redis://h/0", redis_url="redis://h/0"))
