"""kombu's Redis transport with one client object per channel (delivery/broker_transport.py):
chosen for ``redis://`` brokers only, the same client for every command of a channel, and a
task published and consumed through it on the real Redis, under a key prefix of its own."""

from __future__ import annotations

import uuid

import pytest
import redis
from kombu import Connection, Exchange, Queue

from delivery.broker_transport import TRANSPORT, Channel
from delivery.celery_app import broker_conf, make_app
from delivery.settings import Settings
from workers.devkit.services import REDIS_URL


def settings(broker: str) -> Settings:
    return Settings(broker_url=broker, redis_url=REDIS_URL, key_prefix="kp")


def test_plain_redis_brokers_get_the_transport() -> None:
    assert broker_conf(settings("redis://127.0.0.1:6379/0"))["broker_transport"] == TRANSPORT


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
    opts = {"global_keyprefix": prefix}
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
