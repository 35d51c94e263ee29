"""Message bodies never leave the store and the wire, on any failure path.

The fault (issue 13, finding 2): when storing failed, the database error's text (SQLAlchemy's
``[parameters: ...]`` and PostgreSQL's ``DETAIL``/``CONTEXT`` lines) carried the body into the
worker log, the Redis result backend (``celery-task-meta-*``) and Flower's task view.

The traffic: messages whose body holds a unique marker, each forced down one failure path against
a real worker, Flower (as deployed, through ``delivery flower``) and the FCM stub:
a validation error (body over the size limit), a failing statement (a CHECK constraint refuses the
row: PostgreSQL echoes the row in DETAIL), a database outage (connections refused and the
worker's terminated), push errors (FCM answers INTERNAL, the task retries, then gives up), and a
worker killed with kill -9 while it holds tasks.

What must hold: the marker is in no log line of any process, in no Redis key of this test's key
space except the broker's queue and its unacked hash (the task messages themselves, in transit),
and in nothing Flower's API or pages answer.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis
from celery import Celery

from delivery import migrate
from delivery.celery_app import make_app
from delivery.clock import utcnow
from delivery.db import make_engine
from delivery.push.stub import FcmStub
from delivery.settings import Settings
from delivery.store import Store
from tests.ops.test_flower import PASSWORD, USER, flower_proc, get
from tests.ops.test_metrics_status import free_port
from workers.devkit.procs import Proc, celery_worker, wait_until
from workers.devkit.services import PG_ADMIN_URL, REDIS_URL, ServiceEnv, fresh_pg_database

pytestmark = pytest.mark.slow

MARKER = f"BODYMARK{uuid.uuid4().hex}"
FAST = {
    "DELIVERY_ACK_TIMEOUT_S": "1.0",
    "DELIVERY_SWEEP_INTERVAL_S": "0.3",
    "DELIVERY_OFFLINE_GRACE_S": "0.1",
    "DELIVERY_RETRY_BACKOFF_S": "0.2",
    "DELIVERY_PUSH_MAX_RETRIES": "1",
    "DELIVERY_PRESENCE_HEARTBEAT_S": "0.1",
    "DELIVERY_PRESENCE_DOWN_S": "6.0",
    "DELIVERY_PRESENCE_PURGE_S": "20.0",
    "DELIVERY_FCM_PROJECT": "leak",
}
ENDED = ("SUCCESS", "FAILURE")  # Flower's states of a task that will not run again


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    if not wait_until(cond, timeout, interval=0.1):
        raise AssertionError(f"timed out waiting for {what}")


def admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


class Leaks:
    def __init__(self, env: dict[str, str], db_url: str, db_name: str, prefix: str,
                 stub: FcmStub) -> None:
        self.env, self.db_url, self.db_name, self.prefix, self.stub = (
            env, db_url, db_name, prefix, stub)
        self.procs: list[Proc] = []
        self.app: Celery = make_app(Settings.from_env(env))
        self.task_ids: list[str] = []

    def send(self, recipient: str, tag: str, body: Any = None) -> str:
        body = body if body is not None else {"text": f"{MARKER} {tag}", "n": 1}
        tid: str = self.app.send_task("delivery.send", kwargs={
            "sender": "alice", "recipient": recipient, "body": body}).id
        self.task_ids.append(tid)
        return tid

    def state(self, tid: str) -> str:
        return str(self.app.AsyncResult(tid).state)


@pytest.fixture
def leaks(run_prefix: str) -> Iterator[Leaks]:
    with fresh_pg_database("delivery_leak") as db_url, FcmStub() as stub:
        migrate.upgrade(db_url)
        prefix = f"{run_prefix}:leak-{uuid.uuid4().hex[:6]}"
        env = ServiceEnv(db_url, REDIS_URL, prefix).env(DELIVERY_FCM_URL=stub.url, **FAST)
        lk = Leaks(env, db_url, db_url.rpartition("/")[2], prefix, stub)
        try:
            yield lk
        finally:
            admin(f'ALTER DATABASE "{lk.db_name}" WITH ALLOW_CONNECTIONS true')
            lk.app.close()
            for p in lk.procs:
                p.stop()


def redis_values(client: redis.Redis, key: bytes) -> list[bytes]:
    kind = client.type(key)
    if kind == b"string":
        v = client.get(key)
        return [v] if v is not None else []
    if kind == b"list":
        return list(client.lrange(key, 0, -1))
    if kind == b"hash":
        return [k + b"=" + v for k, v in client.hgetall(key).items()]
    if kind == b"set":
        return list(client.smembers(key))
    if kind == b"zset":
        return list(client.zrange(key, 0, -1))
    if kind == b"stream":
        return [json.dumps(str(e)).encode() for e in client.xrange(key)]
    return []


def test_no_failure_path_leaks_a_body(leaks: Leaks) -> None:
    worker = celery_worker(leaks.env, "leak1", concurrency=4)
    leaks.procs.append(worker)
    port = free_port()
    flower = flower_proc(leaks.env, port)
    leaks.procs.append(flower)
    flower.wait_until(lambda: _answers(port), timeout=60)
    time.sleep(1.0)  # Flower's event receiver attaches

    # 1. Validation error: a body over DELIVERY_MAX_BODY_BYTES.
    too_big = leaks.send("bob", "too-big", {"text": f"{MARKER} " + "x" * 20_000})
    # 2. A failing statement: PostgreSQL refuses the row and echoes it ("Failing row contains").
    admin_db = leaks.db_url
    with psycopg.connect(admin_db, autocommit=True) as conn:
        conn.execute(  # type: ignore[arg-type]
            f"ALTER TABLE messages ADD CONSTRAINT leak_refused CHECK "
            f"(body::text NOT LIKE '%{MARKER} refused%')")
    refused = leaks.send("bob", "refused")
    # 3. Push errors: carol is offline with one device; FCM answers INTERNAL (retry, give up).
    store = Store(make_engine(leaks.db_url))
    try:
        store.register_device("carol", "carol-device-token-1", "android", utcnow())
    finally:
        store.engine.dispose()
    leaks.stub.fail_token("carol-device-token-1", "INTERNAL")
    leaks.send("carol", "push-error")
    for tid in (too_big, refused):
        wait_for(lambda t=tid: leaks.state(t) in ("FAILURE", "RETRY"), 60, f"task {tid} to fail")
    wait_for(lambda: len(leaks.stub.sends_to("carol-device-token-1")) >= 2, 60,
             "the push to be tried and retried")

    # 4. A database outage: new connections refused, the worker's connections terminated.
    admin(f'ALTER DATABASE "{leaks.db_name}" WITH ALLOW_CONNECTIONS false')
    admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
          f"WHERE datname = '{leaks.db_name}' AND pid <> pg_backend_pid()")
    outage = [leaks.send(f"dan{i}", f"outage-{i}") for i in range(3)]
    wait_for(lambda: all(leaks.state(t) in ("FAILURE", "RETRY") for t in outage), 60,
             "the sends to fail during the outage")
    admin(f'ALTER DATABASE "{leaks.db_name}" WITH ALLOW_CONNECTIONS true')
    # Every failed task ends before the crash: a retried send that the killed worker still held
    # would stay RECEIVED in Flower until the broker's visibility timeout gives it back (300 s).
    # Flower learns of tasks from events; on a loaded 2-core machine that can take a while.
    wait_for(lambda: all(_flower_state(port, t) in ENDED for t in (too_big, refused, *outage)),
             120, "Flower to see the failed tasks end (the outage sends stored once it is over)")

    # 5. A worker killed while it holds tasks; a new one takes over.
    for i in range(20):
        leaks.send(f"erin{i}", f"crash-{i}")
    worker.kill9()
    worker2 = celery_worker(leaks.env, "leak2", concurrency=4)
    leaks.procs.append(worker2)
    after = leaks.send("frank", "after-crash")
    wait_for(lambda: _flower_state(port, after) in ENDED, 60, "Flower to see the new worker's task")

    # The marker is nowhere but the store and the broker's in-transit task messages.
    for proc in leaks.procs:
        assert MARKER not in proc.log(), f"{proc.name} log leaks the body:\n" + _around(proc.log())
    client = redis.Redis.from_url(REDIS_URL)
    try:
        in_transit = {f"{leaks.prefix}:celery:celery".encode(),
                      f"{leaks.prefix}:celery:unacked".encode()}
        keys = list(client.scan_iter(match=f"{leaks.prefix}*", count=1000))
        assert any(b"celery-task-meta-" in k for k in keys)  # failures were stored
        leaking = [k for k in keys if any(MARKER.encode() in v for v in redis_values(client, k))]
        assert set(leaking) <= in_transit, [
            (k, [_around(v.decode(errors="replace")) for v in redis_values(client, k)])
            for k in set(leaking) - in_transit]
    finally:
        client.close()
    paths = ["/api/tasks", "/api/tasks?state=FAILURE", "/api/tasks?state=RETRY", "/tasks",
             "/api/task/types"]
    paths += [f"/api/task/info/{t}" for t in leaks.task_ids]
    paths += [f"/api/task/result/{t}" for t in (too_big, refused, *outage)]
    for path in paths:
        status, text = get(f"http://127.0.0.1:{port}{path}")
        assert status == 200, (path, status, text[:300])
        assert MARKER not in text, (path, _around(text))
    # The failures are still explained: the stored traceback names the cause.
    info = json.loads(get(f"http://127.0.0.1:{port}/api/task/info/{refused}")[1])
    assert "leak_refused" in str(info.get("exception")) + str(info.get("traceback")), info
    assert USER and PASSWORD  # Flower ran behind the test's real password


def _answers(port: int) -> bool:
    try:
        return get(f"http://127.0.0.1:{port}/healthcheck", auth=False)[0] == 200
    except OSError:
        return False


def _flower_state(port: int, task_id: str) -> str | None:
    status, text = get(f"http://127.0.0.1:{port}/api/task/info/{task_id}")
    state = json.loads(text).get("state") if status == 200 else None
    return str(state) if state is not None else None


def _around(text: str) -> str:
    i = text.find(MARKER)
    return text[max(0, i - 600):i + 200]
