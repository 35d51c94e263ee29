"""kombu's Redis transport with one client object per channel (delivery/broker_transport.py):
chosen for ``redis://`` brokers only, the same client for every command of a channel, and a
task published and consumed through it on the real Redis, under a key prefix of its own."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from delivery.broker_transport import ARRIVALS, TRANSPORT, Channel, extra_fetch
from delivery.celery_app import broker_conf, make_app
from delivery.settings import Settings, SettingsError
from workers.devkit.services import REDIS_URL


def settings(broker: str) -> Settings:
    return Settings(broker_url=broker, redis_url=REDIS_URL, key_prefix="kp")


def test_plain_redis_brokers_get_the_transport() -> None:
    conf = broker_conf(settings("redis://127.0.0.1:6379/0"))
    assert conf["broker_transport"] == TRANSPORT
    assert conf["broker_transport_options"]["fetch_max"] == Settings().broker_fetch_max


def test_the_bulk_fetch_size_is_a_setting() -> None:
    assert Settings.from_env({"DELIVERY_BROKER_FETCH_MAX": "4"}).broker_fetch_max == 4
    s = Settings(broker_url=REDIS_URL, redis_url=REDIS_URL, broker_fetch_max=4)
    assert broker_conf(s)["broker_transport_options"]["fetch_max"] == 4
    with pytest.raises(SettingsError, match="DELIVERY_BROKER_FETCH_MAX must be >= 1"):
        Settings.from_env({"DELIVERY_BROKER_FETCH_MAX": "0"})


@pytest.mark.parametrize("url", ["rediss://127.0.0.1:6379/0", "sentinel://127.0.0.1:26379",
                                 "amqp://guest:guest@127.0.0.1:5672//"])
def test_other_brokers_keep_kombus_transport(url: str) -> None:
    assert "broker_transport" not in broker_conf(settings(url))


def test_a_channel_reuses_one_client_for_its_commands() -> None:
    app = make_app(settings(REDIS_URL))
    try:
        with app.connection_for_write() as conn:
            ch = conn.default_channel
            assert isinstance(ch, Channel)
            assert ch._create_client() is ch._create_client()
            assert ch._create_client().connection_pool is ch.pool
            assert ch._create_client(asynchronous=True) is not ch._create_client()
    finally:
        app.close()


def test_messages_go_through_with_the_key_prefix_and_acks() -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}:"
    queue = Queue(f"q-{uuid.uuid4().hex[:8]}", Exchange("ex", type="direct"), routing_key="k")
    opts = {"global_keyprefix": prefix, "fetch_max": 1}  # kombu's one task per BRPOP
    plain = redis.Redis.from_url(REDIS_URL)
    with Connection(REDIS_URL, transport=TRANSPORT, transport_options=opts) as conn:
        with conn.Producer() as producer:
            for i in range(5):
                producer.publish({"n": i}, exchange=queue.exchange, routing_key="k",
                                 declare=[queue], serializer="json")
        got: list[int] = []
        with conn.SimpleQueue(queue) as sq:
            for _ in range(5):
                msg = sq.get(timeout=5)
                got.append(msg.payload["n"])
                assert plain.hlen(f"{prefix}unacked") == 1  # recorded until acked
                msg.ack()
    try:
        assert got == [0, 1, 2, 3, 4]
        assert plain.exists(f"{prefix}{queue.name}") == 0  # the queue was drained
        assert plain.hlen(f"{prefix}unacked") == 0  # every ack removed its unacked entry
    finally:
        keys = plain.keys(f"{prefix}*")
        if keys:
            plain.delete(*keys)
        plain.close()


# -- the bulk fetch -------------------------------------------------------------------------------

@pytest.mark.parametrize(("fetch_max", "credit", "more"), [
    (16, None, 15), (16, 40, 15), (16, 3, 3), (16, 0, 0), (1, None, 0), (1, 5, 0)])
def test_a_bulk_fetch_stays_within_its_cap_and_the_prefetch_window(
        fetch_max: int, credit: int | None, more: int) -> None:
    assert extra_fetch(fetch_max, credit) == more


class Keys:
    """A key prefix of its own on the real Redis, removed afterwards."""

    def __init__(self) -> None:
        self.prefix = f"t-{uuid.uuid4().hex[:8]}:"
        self.redis = redis.Redis.from_url(REDIS_URL)

    def connect(self, fetch_max: int, **options: Any) -> Connection:
        opts = {"global_keyprefix": self.prefix, "fetch_max": fetch_max, **options}
        return Connection(REDIS_URL, transport=TRANSPORT, transport_options=opts)

    def assert_nothing_recorded(self) -> None:
        assert self.redis.hlen(f"{self.prefix}unacked") == 0
        assert self.redis.zcard(f"{self.prefix}unacked_index") == 0

    def close(self) -> None:
        keys = self.redis.keys(f"{self.prefix}*")
        if keys:
            self.redis.delete(*keys)
        self.redis.close()


@pytest.fixture
def keys() -> Iterator[Keys]:
    k = Keys()
    yield k
    k.close()


def publish(conn: Connection, queue: Queue, numbers: Iterable[int]) -> None:
    with conn.Producer() as producer:
        for i in numbers:
            producer.publish({"n": i}, exchange=queue.exchange, routing_key=queue.routing_key,
                             declare=[queue], serializer="json")


def drain(conn: Connection, queue: Queue, *, prefetch: int, expect: int,
          ack: bool = True) -> tuple[list[int], list[Any]]:
    got: list[int] = []
    held: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        got.append(body["n"])
        held.append(message)
        if ack:
            message.ack()

    with conn.Consumer(queue, callbacks=[on_message], prefetch_count=prefetch):
        wait_for(conn, got, expect)
    return got, held


def wait_for(conn: Connection, got: list[int], expect: int) -> None:
    """Read the connection's events until ``got`` holds ``expect`` messages (10 s at most)."""
    deadline = time.monotonic() + 10
    while len(got) < expect and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            conn.drain_events(timeout=0.5)


def a_queue() -> Queue:
    return Queue(f"q-{uuid.uuid4().hex[:8]}", Exchange("ex", type="direct"), routing_key="k")


def test_one_wake_up_takes_the_waiting_tasks_in_order_and_records_each_unacked(
        keys: Keys) -> None:
    queue = a_queue()
    with keys.connect(8) as conn:
        publish(conn, queue, range(20))
        got, held = drain(conn, queue, prefetch=0, expect=20, ack=False)
        assert got == list(range(20))  # the publish order, across bulk fetches
        # Every task held is recorded as kombu records it, and readable by kombu's restore.
        assert keys.redis.hlen(f"{keys.prefix}unacked") == 20
        assert keys.redis.zcard(f"{keys.prefix}unacked_index") == 20
        for message in held:
            raw, exchange, routing_key = json.loads(
                keys.redis.hget(f"{keys.prefix}unacked", message.delivery_tag))
            assert raw["properties"]["delivery_tag"] == message.delivery_tag
            assert (exchange, routing_key) == ("ex", "k")
        for message in held:
            message.ack()
        keys.assert_nothing_recorded()


def test_a_bulk_fetch_never_takes_past_the_prefetch_window(keys: Keys) -> None:
    queue = a_queue()
    with keys.connect(16) as conn:
        publish(conn, queue, range(12))
        got, _ = drain(conn, queue, prefetch=5, expect=5, ack=False)
        assert got == [0, 1, 2, 3, 4]
        assert keys.redis.llen(f"{keys.prefix}{queue.name}") == 7  # the rest stay in the queue
        assert keys.redis.hlen(f"{keys.prefix}unacked") == 5


def test_tasks_held_by_a_consumer_that_vanished_come_back(keys: Keys) -> None:
    """The records the script writes are the ones kombu's visibility-timeout restore reads."""
    queue = a_queue()
    with keys.connect(16, visibility_timeout=1) as conn:
        publish(conn, queue, range(6))
        got, held = drain(conn, queue, prefetch=0, expect=6, ack=False)
        assert len(got) == 6
        held.clear()  # the consumer is gone without acking: nothing restores them at exit
    time.sleep(1.2)
    with keys.connect(16, visibility_timeout=1) as conn:
        conn.default_channel.qos.restore_visible(num=100)
        again, _ = drain(conn, queue, prefetch=0, expect=6)
    assert sorted(again) == list(range(6))


def test_a_message_kombu_cannot_read_is_left_where_it_was_and_the_rest_still_flow(
        keys: Keys) -> None:
    queue = a_queue()
    with keys.connect(16) as conn:
        publish(conn, queue, range(3))
        # Something not from kombu lands behind them, then more tasks.
        keys.redis.lpush(f"{keys.prefix}{queue.name}", b"not json")
        publish(conn, queue, range(3, 6))
        got, _ = drain(conn, queue, prefetch=0, expect=3)
        assert got == [0, 1, 2]
        # The bulk fetch stopped at it and put it back, untouched, at the head of the queue.
        assert keys.redis.lindex(f"{keys.prefix}{queue.name}", -1) == b"not json"
        assert keys.redis.llen(f"{keys.prefix}{queue.name}") == 4
        assert keys.redis.hlen(f"{keys.prefix}unacked") == 0


def test_a_wake_up_hands_its_tasks_over_then_tells_its_listeners(keys: Keys) -> None:
    queue = a_queue()
    seen: list[tuple[int, bool]] = []  # (tasks handed over so far, open while handed over)
    ends: list[int] = []
    ARRIVALS.listen("test", lambda: ends.append(len(seen)))
    try:
        with keys.connect(8) as conn:
            publish(conn, queue, range(8))
            with conn.Consumer(queue, callbacks=[
                    lambda body, msg: (seen.append((body["n"], ARRIVALS.open)), msg.ack())]):
                conn.drain_events(timeout=5)  # one wake-up
    finally:
        ARRIVALS.listen("test", lambda: None)
    assert seen == [(n, True) for n in range(8)]  # all eight in one wake-up, each while open
    assert ends[0] == 8 and not ARRIVALS.open  # told once they were all handed over


def test_a_no_ack_consumer_gets_its_messages_and_leaves_nothing_recorded(keys: Keys) -> None:
    """Celery's remote-control replies are consumed without acks: nothing may be recorded as
    unacked for them (it would stay there, and come back after the visibility timeout)."""
    queue = a_queue()
    got: list[int] = []
    with keys.connect(16) as conn:
        publish(conn, queue, range(6))
        with conn.Consumer(queue, no_ack=True,
                           callbacks=[lambda body, msg: got.append(body["n"])]):
            wait_for(conn, got, 6)
    assert got == list(range(6))
    keys.assert_nothing_recorded()


def test_a_cancelled_consumers_queue_is_not_fetched_ahead(keys: Keys) -> None:
    queue = a_queue()
    with keys.connect(16) as conn:
        ch = conn.default_channel
        with conn.Consumer(queue, callbacks=[lambda body, msg: msg.ack()]):
            assert queue.name in ch._acked_queues
        assert queue.name not in ch._acked_queues


def test_tasks_fetched_but_not_handed_over_go_back_to_the_head_of_the_queue_in_order(
        keys: Keys) -> None:
    queue = a_queue()
    got: list[int] = []

    def on_message(body: Any, message: Any) -> None:
        got.append(body["n"])
        message.ack()
        if body["n"] == 2:
            raise RuntimeError("the consumer failed while a fetch was handed over")

    with keys.connect(16) as conn:
        publish(conn, queue, range(8))
        with conn.Consumer(queue, callbacks=[on_message]):
            with pytest.raises(RuntimeError):
                conn.drain_events(timeout=5)
            assert got == [0, 1, 2]
            assert keys.redis.hlen(f"{keys.prefix}unacked") == 0  # nothing left recorded
            wait_for(conn, got, 8)
    assert got == list(range(8))  # 3..7 came back first, in their order
