"""Sharding as configured: the settings, which Celery queue each task goes to (checked on the
app's own router, as ``send_task`` applies it), and the presence each role builds."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from delivery.celery_app import make_app
from delivery.secret import new_secret
from delivery.settings import Settings, SettingsError
from delivery.sharding import make_presence, recipient_queue, shard_count
from delivery.task_names import COMMON_QUEUE, PUSH_TASK, ROUTE_TASK, SEND_TASK, shard_queue
from presence.runtime import PresenceNode
from presence.sharded import ShardedPresence
from presence.shards import shard_of
from workers.bootsteps import shard_queues
from workers.devkit.services import REDIS_URL

SECRET = new_secret()


def cluster_settings(**env: str) -> Settings:
    return Settings.from_env({
        "DELIVERY_BROKER_URL": REDIS_URL, "DELIVERY_REDIS_URL": REDIS_URL,
        "DELIVERY_SECRET": SECRET, **env})


def queue_of(settings: Settings, name: str, kwargs: dict[str, Any]) -> str:
    app = make_app(settings)
    try:
        options = app.amqp.router.route({}, name, (), kwargs)
        return str(options["queue"].name)
    finally:
        app.close()


def test_unsharded_is_the_default_and_every_task_stays_on_the_default_queue() -> None:
    s = cluster_settings()
    assert s.presence_shards == 1 and s.served_shards == (0,)
    app = make_app(s)
    assert not app.conf.task_routes  # no router at all: exactly the unsharded configuration
    app.close()
    for name in (SEND_TASK, ROUTE_TASK, PUSH_TASK):
        assert queue_of(s, name, {"recipient": "bob", "message_id": "m"}) == COMMON_QUEUE
    assert shard_queues(s) == []


def test_send_and_route_go_to_the_recipients_shard_queue() -> None:
    s = cluster_settings(DELIVERY_PRESENCE_SHARDS="4")
    for user in ("alice", "bob", "carol", "dave", "erin"):
        want = f"delivery.s{shard_of(user, 4)}"
        assert recipient_queue(user, s) == want
        assert queue_of(s, SEND_TASK, {"sender": "x", "recipient": user, "body": {}}) == want
        assert queue_of(s, ROUTE_TASK, {"message_id": "m", "recipient": user}) == want
    # push needs no presence: the common queue; a route task without a recipient too (the
    # worker that takes it hands it on, Router.forward)
    assert queue_of(s, PUSH_TASK, {"message_id": "m", "attempt": 1}) == COMMON_QUEUE
    assert queue_of(s, ROUTE_TASK, {"message_id": "m"}) == COMMON_QUEUE


def test_a_worker_consumes_its_shards_queues_and_the_common_one() -> None:
    s = cluster_settings(DELIVERY_PRESENCE_SHARDS="4", DELIVERY_WORKER_SHARDS="0,2")
    assert s.served_shards == (0, 2)
    assert shard_queues(s) == [COMMON_QUEUE, shard_queue(0, 4), shard_queue(2, 4)]
    assert shard_queues(cluster_settings(DELIVERY_PRESENCE_SHARDS="4")) == [
        COMMON_QUEUE, *(f"delivery.s{i}" for i in range(4))]


def test_the_embedded_mode_is_unsharded_whatever_s_says(tmp_path: Any) -> None:
    s = Settings.from_env({"DELIVERY_DATA_DIR": str(tmp_path), "DELIVERY_PRESENCE_SHARDS": "4"})
    assert shard_count(s) == 1 and recipient_queue("bob", s) == COMMON_QUEUE


@pytest.mark.parametrize(("env", "names"), [
    ({"DELIVERY_PRESENCE_SHARDS": "0"}, "DELIVERY_PRESENCE_SHARDS"),
    ({"DELIVERY_PRESENCE_SHARDS": "x"}, "DELIVERY_PRESENCE_SHARDS"),
    ({"DELIVERY_PRESENCE_SHARDS": "4", "DELIVERY_WORKER_SHARDS": "4"}, "DELIVERY_WORKER_SHARDS"),
    ({"DELIVERY_WORKER_SHARDS": "a"}, "DELIVERY_WORKER_SHARDS"),
    ({"DELIVERY_PRESENCE_PUBSUB": "gossip"}, "DELIVERY_PRESENCE_PUBSUB"),
    ({"DELIVERY_PRESENCE_PUBSUB": "cluster"}, "DELIVERY_PRESENCE_REDIS_URL"),
    ({"DELIVERY_PRESENCE_REDIS_URL": "http://h"}, "DELIVERY_PRESENCE_REDIS_URL"),
])
def test_bad_sharding_settings_stop_startup_naming_the_variable(env: dict[str, str],
                                                                names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        cluster_settings(**env)


def test_each_role_builds_its_presence() -> None:
    one = make_presence(cluster_settings(), "gw-x", gateway=True)
    assert isinstance(one, PresenceNode)  # unsharded: the node of before, on the one channel
    assert one.transport.channel.endswith(":presence")  # type: ignore[attr-defined]
    one.transport.close()
    s = cluster_settings(DELIVERY_PRESENCE_SHARDS="4", DELIVERY_WORKER_SHARDS="1-2")
    gw = make_presence(s, "gw-x", gateway=True)
    worker = make_presence(s, "worker.x", gateway=False)
    try:
        assert isinstance(gw, ShardedPresence) and isinstance(worker, ShardedPresence)
        assert gw.served == (0, 1, 2, 3) and worker.served == (1, 2)
        # gateways write every shard without listening to any; workers listen to theirs
        assert all(not n.transport.listen for n in gw.nodes.values())  # type: ignore[attr-defined]
        assert all(n.transport.listen for n in worker.nodes.values())  # type: ignore[attr-defined]
    finally:
        for p in (gw, worker):
            for n in p.nodes.values():
                n.transport.close()


def test_every_process_of_a_deployment_must_use_the_same_s() -> None:
    import redis

    from delivery.preflight import check_redis, shard_count_key

    prefix = f"test-s-{uuid.uuid4().hex[:8]}"
    four = cluster_settings(DELIVERY_PRESENCE_SHARDS="4", DELIVERY_KEY_PREFIX=prefix)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        check_redis(cluster_settings(DELIVERY_KEY_PREFIX=prefix))
        assert client.get(shard_count_key(four)) is None  # S = 1 writes nothing
        check_redis(four)  # the first sharded process records S
        assert client.get(shard_count_key(four)) == b"4"
        check_redis(four)
        for other in ("2", "1"):
            with pytest.raises(SettingsError, match="DELIVERY_PRESENCE_SHARDS"):
                check_redis(cluster_settings(DELIVERY_PRESENCE_SHARDS=other,
                                             DELIVERY_KEY_PREFIX=prefix))
    finally:
        client.delete(shard_count_key(four))
        client.close()
