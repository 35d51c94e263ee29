"""``delivery gateway`` as a subprocess on Redis + PostgreSQL: presence over Redis, frames on the
node channel, acks in PostgreSQL, a nack enqueued as the ``delivery.route`` Celery task on the
real broker, and graceful SIGTERM (1001, untracked, presence leave)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
import redis

from delivery.channels import RedisChannels
from delivery.client import DeliveryClient
from delivery.clock import utcnow
from delivery.gateway import issue_token
from delivery.models import State
from delivery.store import Store, Target
from presence.config import PresenceConfig
from presence.runtime import PresenceNode, redis_transport
from workers.devkit.procs import Proc, delivery_cmd
from workers.devkit.services import ServiceEnv

pytestmark = pytest.mark.slow

FAST = PresenceConfig(heartbeat_s=0.1, down_s=1.0, purge_s=5.0)


def start_gateway(services: ServiceEnv, node: str) -> tuple[Proc, int]:
    env = services.env(DELIVERY_PRESENCE_HEARTBEAT_S="0.1", DELIVERY_PRESENCE_DOWN_S="1",
                       DELIVERY_PRESENCE_PURGE_S="5")
    proc = delivery_cmd(node, ["gateway", "--node", node, "--host", "127.0.0.1", "--port", "0"],
                        env)
    proc.wait_for_log(f"gateway {node} listening on ws://", timeout=60)
    m = re.search(rf"gateway {node} listening on ws://127\.0\.0\.1:(\d+)/ws", proc.log())
    assert m, proc.log()
    return proc, int(m.group(1))


def route_tasks(url: str, prefix: str) -> list[dict[str, Any]]:
    """Every ``delivery.route`` task message waiting in the broker under ``prefix``."""
    client = redis.Redis.from_url(url)
    found = []
    for key in client.scan_iter(match=f"{prefix}:*"):
        if client.type(key) != b"list":
            continue
        for raw in client.lrange(key, 0, -1):
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if isinstance(msg, dict) and msg.get("headers", {}).get("task") == "delivery.route":
                found.append(msg)
    client.close()
    return found


def accept(store: Store, recipient: str) -> Any:
    now = utcnow()
    msg, _ = store.accept(message_id=uuid.uuid4(), sender="alice", recipient=recipient,
                          body={"text": "hi"}, client_msg_id=None, now=now, ttl_s=3600,
                          deadline=now + timedelta(seconds=60))
    return msg


def dispatch(store: Store, channels: RedisChannels, msg: Any, node: str, conn: str) -> int:
    now = utcnow()
    cur = store.get(msg.id)
    assert cur is not None
    attempt = store.start_attempt(cur, channel="ws", targets=[Target(node, conn)], now=now,
                                  deadline=now + timedelta(seconds=60))
    assert attempt is not None
    channels.publish(node, {"type": "deliver", "id": str(msg.id), "user": msg.recipient,
                            "from": msg.sender, "body": msg.body,
                            "sent_at": msg.created_at.isoformat(), "seq": msg.seq,
                            "conns": [conn], "attempt": attempt})
    return attempt


def wait(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_gateway_process_on_redis_and_postgres(services: ServiceEnv, pg_store: Store) -> None:
    node = f"gwp{uuid.uuid4().hex[:6]}"
    proc, port = start_gateway(services, node)
    observer = PresenceNode("observer", redis_transport(services.redis_url, services.key_prefix,
                                                       "observer"), FAST)
    observer.start()
    channels = RedisChannels(services.redis_url, services.key_prefix)
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        replayed = accept(pg_store, "bob")

        async def session() -> tuple[str, str]:
            token = issue_token("bob", services.secret, 60)
            async with DeliveryClient(url, token, reconnect=False) as client:
                first = await client.receive(10)  # replay
                assert first.id == str(replayed.id)
                assert client.conn_id is not None
                conn = client.conn_id
                await asyncio.to_thread(wait, lambda: [p.conn for p in observer.list("bob")]
                                        == [conn])
                assert observer.list("bob")[0].meta.get("node") == node
                live = accept(pg_store, "bob")
                dispatch(pg_store, channels, live, node, conn)
                second = await client.receive(10)
                assert second.id == str(live.id) and second.body == {"text": "hi"}
                await asyncio.to_thread(wait, lambda: all(
                    pg_store.get(m.id).state == State.DELIVERED  # type: ignore[union-attr]
                    for m in (replayed, live)))
            return conn, str(live.id)

        conn, _ = asyncio.run(session())
        wait(lambda: observer.list("bob") == [])

        # A frame for the closed connection: the gateway nacks it through the Celery broker.
        gone = accept(pg_store, "bob")
        attempt = dispatch(pg_store, channels, gone, node, conn)
        wait(lambda: len(route_tasks(services.redis_url, services.key_prefix)) == 1)
        (task,) = route_tasks(services.redis_url, services.key_prefix)

        _args, kwargs, _ = json.loads(base64.b64decode(task["body"]))
        assert kwargs == {"message_id": str(gone.id), "attempt": attempt, "nacked": [conn],
                          "node": node}
        (row,) = pg_store.attempts_of(gone.id)
        assert row.result == "nacked"

        # Graceful shutdown: 1001, untracked, presence leave, exit 0.
        async def shutdown() -> tuple[int | None, str]:
            token = issue_token("carol", services.secret, 60)
            client = DeliveryClient(url, token, reconnect=False)
            await client.connect()
            await asyncio.to_thread(wait, lambda: len(observer.list("carol")) == 1)
            proc.popen.send_signal(signal.SIGTERM)
            async for _ in client:
                pass
            return client.close_code, client.close_reason

        code, reason = asyncio.run(shutdown())
        assert code == 1001 and "shutting down" in reason
        assert proc.popen.wait(15) == 0
        wait(lambda: observer.list("carol") == [], timeout=3)
        assert f"gateway {node} stopped" in proc.log()
    finally:
        observer.stop()
        proc.stop()
