"""Producer flow control on the real brokers: the depth reader counts what waits in the queue
(Redis ``LLEN``, RabbitMQ passive ``queue_declare``), and ``send_message`` past
DELIVERY_MAX_BACKLOG raises ``Overloaded`` before storing or enqueueing anything. No worker
consumes here, so every send stays queued."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from celery import Celery

from delivery import flow_gate
from delivery.api import Overloaded, SendNotAccepted, send_message, send_to_conversation
from delivery.celery_app import make_app
from delivery.flow import ADMIT, FlowConfig
from delivery.settings import Settings
from delivery.store import Store
from delivery.task_names import SEND_TASK
from delivery.validation import message_id_for
from tests.support.flow import producer_bound
from workers.devkit.services import REDIS_URL

BOUND = 8


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_app(request: pytest.FixtureRequest, key_prefix: str) -> Iterator[Celery]:
    url = request.getfixturevalue("amqp_url") if request.param == "rabbitmq" else REDIS_URL
    app = make_app(Settings(broker_url=url, redis_url=REDIS_URL, key_prefix=key_prefix))
    yield app
    app.close()


@pytest.fixture
def bound(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """DELIVERY_MAX_BACKLOG for this process's producers (read once, like any setting)."""
    with producer_bound(monkeypatch, BOUND, refresh_ms=1) as value:
        yield value


def _reader(app: Celery) -> flow_gate.DepthReader:
    reader = flow_gate.depth_reader(app, "celery")
    assert reader is not None
    return reader


def test_the_reader_counts_the_queued_tasks(broker_app: Celery) -> None:
    read = _reader(broker_app)
    assert read() == 0  # on RabbitMQ the queue does not even exist yet
    for i in range(5):
        broker_app.send_task(SEND_TASK, kwargs={"sender": "a", "recipient": "b", "body": i},
                             ignore_result=True)
    assert read() == 5


def test_the_in_process_broker_has_nothing_to_read() -> None:
    app = make_app(Settings())
    try:
        assert flow_gate.depth_reader(app, "celery") is None
    finally:
        app.close()


def test_past_the_bound_enqueue_only_sends_raise_overloaded_and_enqueue_nothing(
    broker_app: Celery, bound: int,
) -> None:
    sent = [send_message("alice", "bob", {"i": i}, client_msg_id=f"f-{i}", app=broker_app,
                         durable=False) for i in range(bound)]
    assert len(set(sent)) == bound
    with pytest.raises(Overloaded) as info:
        send_message("alice", "bob", {"i": "x"}, client_msg_id="f-x", app=broker_app,
                     durable=False)
    err = info.value
    assert isinstance(err, SendNotAccepted)  # callers that retry SendNotAccepted retry this
    assert (err.backlog, err.bound) == (bound, bound)
    assert err.retry_after_s > 0
    assert "DELIVERY_MAX_BACKLOG" in str(err) and "client_msg_id" in str(err)
    time.sleep(0.01)
    assert _reader(broker_app)() == bound  # the refused send was not enqueued


def test_past_the_bound_a_stored_first_send_stores_nothing(
    broker_app: Celery, bound: int, pg_store: Store,
) -> None:
    for i in range(bound):
        send_message("alice", "bob", {"i": i}, client_msg_id=f"s-{i}", app=broker_app,
                     store=pg_store)
    time.sleep(0.01)  # a fresh reading, not only this process's count
    with pytest.raises(Overloaded):
        send_message("alice", "bob", {"i": "x"}, client_msg_id="s-x", app=broker_app,
                     store=pg_store)
    assert pg_store.get(message_id_for("alice", "s-x")) is None
    assert pg_store.count_by_state() == {"accepted": bound}


def test_a_group_send_past_the_bound_stores_nothing(
    broker_app: Celery, bound: int, pg_store: Store,
) -> None:
    from delivery.api import create_conversation

    conv = f"g-{uuid.uuid4().hex[:8]}"
    create_conversation(conv, ["alice", "bob", "carol"], store=pg_store)
    for i in range(bound):
        broker_app.send_task(SEND_TASK, kwargs={"sender": "a", "recipient": "b", "body": i},
                             ignore_result=True)
    time.sleep(0.01)
    with pytest.raises(Overloaded):
        send_to_conversation("alice", conv, {"t": 1}, client_msg_id="g-1", app=broker_app,
                             store=pg_store)
    assert pg_store.get(message_id_for("alice", "g-1")) is None


def test_once_the_queue_drains_sends_are_admitted_again(
    broker_app: Celery, bound: int,
) -> None:
    for i in range(bound):
        broker_app.send_task(SEND_TASK, kwargs={"sender": "a", "recipient": "b", "body": i},
                             ignore_result=True)
    time.sleep(0.01)
    with pytest.raises(Overloaded):
        send_message("alice", "bob", 1, client_msg_id="d-1", app=broker_app, durable=False)
    broker_app.control.purge()
    time.sleep(0.01)
    msg_id = send_message("alice", "bob", 1, client_msg_id="d-1", app=broker_app,
                          durable=False)
    assert msg_id == str(message_id_for("alice", "d-1"))


def test_an_unreachable_broker_is_not_reported_by_the_gate(bound: int) -> None:
    """The probe adds no failure of its own: a broker that cannot be reached admits the send,
    and the enqueue reports it (stored-first sends: the sweep routes the stored row)."""
    app = make_app(Settings(broker_url="redis://127.0.0.1:1/0", redis_url=REDIS_URL))
    try:
        gate = flow_gate.gate_for(app, "celery")
        assert gate is not None
        assert gate.check(FlowConfig(max_backlog=bound)) is ADMIT
        assert gate.failures == 1
    finally:
        app.close()


def test_the_gate_works_through_a_celery_proxy(broker_app: Celery, bound: int) -> None:
    """``send_message`` without ``app`` may get ``celery.current_app``, a Proxy (in the API
    process, in workers): the gate must see through it."""
    from celery import current_app

    broker_app.set_current()
    assert flow_gate.queue_of(current_app, SEND_TASK, {"recipient": "b"}) == "celery"
    gate = flow_gate.gate_for(current_app, "celery")
    assert gate is not None and gate is flow_gate.gate_for(broker_app, "celery")
