"""Producers that are not Python, on real processes: a hand-built Celery protocol v2 message
pushed onto the broker with a plain client (redis-py's LPUSH; py-amqp's basic_publish on
RabbitMQ), as celery-node or gocelery would; and a Node 20 script that mints its own JWT, sends
over ``POST /v1/messages`` and receives and acks the message as a WebSocket client."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import amqp
import httpx
import pytest
import redis

from delivery.api import create_conversation
from delivery.conversations.ids import delivery_id
from delivery.secret import new_secret
from delivery.store import Store
from delivery.task_names import SEND_TASK
from delivery.validation import MESSAGE_NAMESPACE
from tests.e2e.conftest import FAST, client, receive_ids, user, wait_state
from workers.devkit.cluster import LocalCluster
from workers.devkit.procs import ROOT
from workers.devkit.services import REDIS_URL, ServiceEnv

pytestmark = pytest.mark.slow

NODE_SCRIPT = ROOT / "tests" / "e2e" / "node" / "send_and_receive.mjs"


def celery_v2_message(kwargs: dict[str, Any], *, queue: str = "celery") -> tuple[
        dict[str, Any], bytes, dict[str, Any]]:
    """Headers, body and properties of a Celery protocol v2 task message, built by hand from
    the documented format (docs/operations.md "Producers in other languages")."""
    task_id = str(uuid.uuid4())
    headers = {
        "lang": "js", "task": SEND_TASK, "id": task_id, "root_id": task_id, "parent_id": None,
        "group": None, "retries": 0, "eta": None, "expires": None, "timelimit": [None, None],
        "argsrepr": "()", "kwargsrepr": "{'body': '<redacted>'}", "origin": "node-producer",
        "ignore_result": True,
    }
    body = json.dumps([[], kwargs, {"callbacks": None, "errbacks": None, "chain": None,
                                    "chord": None}]).encode()
    properties = {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2,
                  "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
                  "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}
    return headers, body, properties


def push_raw_to_redis(url: str, key_prefix: str, kwargs: dict[str, Any]) -> None:
    headers, body, properties = celery_v2_message(kwargs)
    envelope = {"body": base64.b64encode(body).decode(), "content-encoding": "utf-8",
                "content-type": "application/json", "headers": headers,
                "properties": properties}
    r = redis.Redis.from_url(url)
    try:
        r.lpush(f"{key_prefix}:celery:celery", json.dumps(envelope))
    finally:
        r.close()


def publish_raw_to_rabbitmq(url: str, kwargs: dict[str, Any]) -> None:
    headers, body, properties = celery_v2_message(kwargs)
    parts = urlsplit(url)
    conn = amqp.Connection(host=f"{parts.hostname}:{parts.port or 5672}",
                           userid=parts.username or "guest", password=parts.password or "guest",
                           virtual_host=parts.path.lstrip("/") or "/")
    conn.connect()
    try:
        channel = conn.channel()
        channel.confirm_select()
        channel.basic_publish(
            amqp.Message(body, content_type="application/json", content_encoding="utf-8",
                         application_headers=headers, delivery_mode=2,
                         correlation_id=properties["correlation_id"], priority=0),
            exchange="", routing_key="celery", confirm_timeout=10)
    finally:
        conn.close()


def expected_id(sender: str, client_msg_id: str) -> str:
    return str(uuid.uuid5(MESSAGE_NAMESPACE, f"{sender}\x00{client_msg_id}"))


def receive_one(cluster: LocalCluster, recipient: str, send: Any) -> list[str]:
    async def run() -> list[str]:
        c = await client(cluster, "gw-a", recipient).connect()
        try:
            send()
            return await receive_ids(c, 1)
        finally:
            await c.close()

    return asyncio.run(run())


def test_a_raw_celery_message_pushed_with_redis_py_is_delivered(
        cluster: LocalCluster, pg_store: Store) -> None:
    rcp, cmid = user(), f"raw-{uuid.uuid4().hex[:8]}"
    kwargs = {"sender": "go-backend", "recipient": rcp, "body": {"text": "from a raw task"},
              "client_msg_id": cmid}
    msg_id = expected_id("go-backend", cmid)
    got = receive_one(cluster, rcp, lambda: push_raw_to_redis(
        cluster.env["DELIVERY_REDIS_URL"], cluster.env["DELIVERY_KEY_PREFIX"], kwargs))
    assert got == [msg_id]
    msg = wait_state(pg_store, msg_id, {"delivered"})
    assert msg.body == {"text": "from a raw task"} and msg.sender == "go-backend"


def test_a_raw_celery_message_published_on_rabbitmq_is_delivered(
        amqp_url: str, pg_url: str, run_prefix: str, pg_store: Store) -> None:
    env = ServiceEnv(pg_url, REDIS_URL, f"{run_prefix}:rawamqp",
                     broker_url=amqp_url).env(**FAST)
    with LocalCluster(env) as cluster:
        cluster.start_gateway("gw-a")
        cluster.start_worker("wr1", concurrency=2)  # declares the durable "celery" queue
        rcp, cmid = user(), f"raw-{uuid.uuid4().hex[:8]}"
        kwargs = {"sender": "java-backend", "recipient": rcp, "body": "over amqp",
                  "client_msg_id": cmid, "ttl_s": 3600}
        got = receive_one(cluster, rcp, lambda: publish_raw_to_rabbitmq(amqp_url, kwargs))
        assert got == [expected_id("java-backend", cmid)]
        assert wait_state(pg_store, got[0], {"delivered"}).body == "over amqp"


@pytest.fixture
def api_url(cluster: LocalCluster) -> Iterator[tuple[str, str]]:
    key = new_secret()
    with LocalCluster({**cluster.env, "DELIVERY_API_KEYS": key}) as own:
        url, _ = own.start_api()
        yield url, key


def test_node_mints_a_jwt_sends_over_http_and_receives(
        cluster: LocalCluster, api_url: tuple[str, str], pg_store: Store) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Node 20 runs this test)")
    url, key = api_url
    rcp = user()
    env = {**os.environ, "API_URL": url, "API_KEY": key, "WS_URL": cluster.gateways["gw-a"].url,
           "TOKEN_SECRET": cluster.env["DELIVERY_SECRET"], "TOKEN_KID": "", "SENDER": "node",
           "RECIPIENT": rcp}
    res = subprocess.run([node, "--experimental-websocket", "--no-warnings", str(NODE_SCRIPT)],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr + res.stdout
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got == {"id": expected_id("node", f"node-{rcp}"), "from": "node",
                   "body": {"text": "hello from node"}}
    assert wait_state(pg_store, got["id"], {"delivered"}).state == "delivered"


def test_a_group_message_posted_over_http_reaches_every_member(
        cluster: LocalCluster, api_url: tuple[str, str], pg_store: Store) -> None:
    url, key = api_url
    sender, bob, carol = user(), user(), user()
    conv = f"team-{uuid.uuid4().hex[:6]}"
    create_conversation(conv, [sender, bob, carol], store=pg_store)

    async def run() -> tuple[str, list[str], list[str]]:
        cb = await client(cluster, "gw-a", bob).connect()
        cc = await client(cluster, "gw-b", carol).connect()
        try:
            res = await asyncio.to_thread(
                httpx.post, f"{url}/v1/messages", timeout=30,
                headers={"Authorization": f"Bearer {key}"},
                json={"sender": sender, "conversation": conv, "body": "to the team",
                      "client_msg_id": "g-1"})
            assert res.status_code == 202, res.text
            return res.json()["id"], await receive_ids(cb, 1), await receive_ids(cc, 1)
        finally:
            await cb.close()
            await cc.close()

    msg_id, got_b, got_c = asyncio.run(run())
    assert msg_id == expected_id(sender, "g-1")
    assert got_b == [str(delivery_id(uuid.UUID(msg_id), bob))]
    assert got_c == [str(delivery_id(uuid.UUID(msg_id), carol))]
