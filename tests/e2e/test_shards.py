"""Sharded presence and routing on real processes, S = 4: two gateways writing every shard,
workers serving different shards (DELIVERY_WORKER_SHARDS), Redis broker with a short
visibility timeout. A user's messages are routed only by workers of that user's shard (every
send and route task, as the workers' task events report them, ran in a worker process serving
the recipient's shard); a worker moved to other shards syncs them before it consumes their
queues; the only worker of a shard killed with -9 mid-traffic and restarted loses nothing."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from delivery.celery_app import make_app
from delivery.push.stub import FcmStub
from delivery.settings import Settings
from delivery.store import Store
from presence.shards import shard_of
from tests.e2e.conftest import FAST
from tests.e2e.traffic import USERS, Traffic
from workers.devkit.cluster import LocalCluster
from workers.devkit.procs import Proc, delivery_cmd
from workers.devkit.services import REDIS_URL, ServiceEnv

pytestmark = pytest.mark.slow

S = 4


@pytest.fixture
def pg_url(own_pg: tuple[str, Store]) -> str:
    """A database of these tests' own: the session cluster's workers (S = 1) sweep the shared
    one and would route these tests' stalled messages with a presence that has not heard of
    their users."""
    return own_pg[0]


@pytest.fixture
def pg_store(own_pg: tuple[str, Store]) -> Store:
    return own_pg[1]


@pytest.fixture
def broker() -> str:
    return "redis"


@pytest.fixture
def pubsub() -> str:
    return "classic"


@pytest.fixture
def shard_env(request: pytest.FixtureRequest, pg_url: str, run_prefix: str, stub: FcmStub,
              broker: str, pubsub: str) -> dict[str, str]:
    """S = 4 on the shared Redis (presence, node channels; the broker too unless ``broker`` is
    rabbitmq: then a vhost of the test's own)."""
    broker_url = request.getfixturevalue("amqp_url") if broker == "rabbitmq" else ""
    env = ServiceEnv(pg_url, REDIS_URL, f"{run_prefix}:shards-{uuid.uuid4().hex[:6]}",
                     broker_url=broker_url).env(
        DELIVERY_FCM_URL=stub.url, DELIVERY_PRESENCE_SHARDS=str(S),
        DELIVERY_PRESENCE_PUBSUB=pubsub, **FAST)
    # a killed worker's prefetched tasks come back after this (kombu's Redis transport)
    env["DELIVERY_VISIBILITY_TIMEOUT_S"] = "4"
    return env


@pytest.fixture
def shard_cluster(shard_env: dict[str, str]) -> Iterator[tuple[LocalCluster, Celery]]:
    with LocalCluster(shard_env) as c:
        c.start_gateway("gw-a")
        c.start_gateway("gw-b")
        c.start_worker("sa", concurrency=4, shards="0,1")
        c.start_worker("sb", concurrency=4, shards="2,3")
        app = make_app(Settings.from_env(shard_env))
        yield c, app
        app.close()


def spread_users(t: Traffic) -> None:
    """USERS users, the same number in every shard (random ids could leave a shard empty)."""
    per = USERS // S
    users: list[str] = []
    for s in range(S):
        found = 0
        while found < per:
            u = f"sh-{uuid.uuid4().hex[:8]}"
            if shard_of(u, S) == s:
                users.append(u)
                found += 1
    t.users = users
    t.received = {u: t.received.popitem()[1] for u in users}


class TaskEvents:
    """Every ``task-received`` event the workers send (they run with -E): which worker process
    (pid) took which task, with its kwargs as Flower shows them (bodies redacted)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.received: list[dict[str, Any]] = []
        self.error: Exception | None = None
        self._recv: Any = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with self.app.connection() as conn:
                self._recv = self.app.events.Receiver(
                    conn, handlers={"task-received": self.received.append})
                self._ready.set()
                self._recv.capture(limit=None, timeout=None, wakeup=False)
        except Exception as exc:  # reported by __exit__
            self.error = exc
            self._ready.set()

    def __enter__(self) -> TaskEvents:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._recv is not None:
            self._recv.should_stop = True
        self._thread.join(10)
        assert self.error is None, repr(self.error)


def served(proc: Proc) -> tuple[int, ...]:
    match = re.search(r"shards=([0-9,]+)", proc.log())
    assert match is not None, proc.log()[-2000:]
    return tuple(int(x) for x in match.group(1).split(","))


def check_routed_by_their_shard(t: Traffic, events: TaskEvents, procs: list[Proc]) -> None:
    """Every send and route task of these messages ran in a worker process serving its
    recipient's shard; every message's send task was seen."""
    shards_of_pid = {p.popen.pid: served(p) for p in procs}
    users = set(t.users)
    sends: set[str] = set()
    checked = 0
    for ev in list(events.received):
        if ev.get("name") not in ("delivery.send", "delivery.route"):
            continue
        match = re.search(r"'recipient': '([^']+)'", str(ev.get("kwargs", "")))
        if match is None or match.group(1) not in users:
            continue
        user = match.group(1)
        assert ev["pid"] in shards_of_pid, ev
        assert shard_of(user, S) in shards_of_pid[ev["pid"]], (ev, shards_of_pid[ev["pid"]])
        checked += 1
        if ev["name"] == "delivery.send":
            found = re.search(r"'client_msg_id': '([^']+)'", str(ev["kwargs"]))
            if found is not None:
                sends.add(found.group(1))
    assert checked >= len(t.sent), (checked, len(t.sent), events.received[:3])
    assert len(sends) == len(t.sent), (len(sends), len(t.sent))


@pytest.mark.parametrize("pubsub", ["classic", "sharded"])  # sharded: SPUBLISH/SSUBSCRIBE
def test_each_shards_messages_are_routed_by_its_workers_only(
    shard_cluster: tuple[LocalCluster, Celery], pg_store: Store, stub: FcmStub, pubsub: str
) -> None:
    cluster, app = shard_cluster

    async def nothing() -> None:
        return None

    t = Traffic(cluster, app, pg_store, with_devices=False)
    spread_users(t)
    with TaskEvents(app) as events:
        asyncio.run(t.run_with(120, 60, nothing))
        t.check(stub)
    check_routed_by_their_shard(t, events, list(cluster.workers.values()))
    # every user was online: nobody was pushed (no worker routed on an empty view)
    assert stub.requests == []
    # delivery status joins every shard: the gateways write all four, each worker its two
    status = delivery_cmd("status", ["status", "--json"], cluster.env)
    assert status.popen.wait(60) == 0, status.log()
    out = status.log()
    replicas = {r["name"]: r for r in json.loads(out[out.index("{"):])["presence"]["replicas"]}
    assert replicas["gw-a"]["shards"] == [0, 1, 2, 3] and replicas["gw-a"]["status"] == "up"
    sa = [r for n, r in replicas.items() if n.startswith("worker.sa@")]
    assert [r["shards"] for r in sa] == [[0, 1]], replicas
    # the attempt rows name the gateway each user was connected to (a message can also have
    # none: replayed to a client that reconnected before its send task ran, under load)
    for m, u in t.sent.items():
        rows = pg_store.attempts_of(uuid.UUID(m))
        node = "gw-a" if t.users.index(u) % 2 == 0 else "gw-b"
        assert all(r.node == node for r in rows if r.channel == "ws"), rows


def test_a_worker_moved_to_other_shards_syncs_them_before_consuming(
    shard_cluster: tuple[LocalCluster, Celery], pg_store: Store, stub: FcmStub
) -> None:
    cluster, app = shard_cluster
    before = cluster.start_worker("sc", concurrency=4, shards="0,2")
    logs = [*cluster.workers.values()]

    async def move() -> None:
        old = cluster.workers.pop("sc")
        await asyncio.to_thread(old.stop, signal.SIGTERM, 30.0)  # warm: hands back its tasks
        new = await asyncio.to_thread(cluster.start_worker, "sc", concurrency=4,
                                      shards="1,3")
        logs.append(new)

    async def more() -> None:
        await t.send(100, 40)  # while the moved worker consumes its new shards

    t = Traffic(cluster, app, pg_store, with_devices=False)
    spread_users(t)
    with TaskEvents(app) as events:
        asyncio.run(t.run_with(120, 40, move, more))
        t.check(stub)
    assert stub.requests == []  # the moved worker never routed with an unsynced replica
    check_routed_by_their_shard(t, events, logs)
    # the moved worker took tasks of its new shards
    assert any(ev.get("pid") == logs[-1].popen.pid for ev in events.received)
    moved = logs[-1]
    assert served(before) == (0, 2) and served(moved) == (1, 3)
    log = moved.log()
    # it consumes its new shards' queues (Celery's banner) and the common one, not the old ones
    banner = log[log.index("[queues]"):log.index("[tasks]")]
    assert re.findall(r"\.> (\S+)", banner) == ["celery", "delivery.s1", "delivery.s3"]
    # its replicas synced before the Consumer started (the presence bootstep blocks it)
    assert log.index("synced=True") < log.index("ready.")
    replies = app.control.broadcast("presence_shards", reply=True, timeout=2.0)
    by_name = {next(iter(r)).split("@")[0]: next(iter(r.values())) for r in replies}
    assert by_name["sc"]["shards"] == [1, 3] and all(by_name["sc"]["synced"].values())


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_kill_the_only_worker_of_two_shards_mid_traffic_and_restart_it(
    shard_cluster: tuple[LocalCluster, Celery], pg_store: Store, stub: FcmStub, broker: str
) -> None:
    cluster, app = shard_cluster

    async def kill() -> None:
        cluster.workers["sb"].kill9()  # shards 2 and 3 have no worker now

    async def restart() -> None:
        await asyncio.to_thread(cluster.start_worker, "sb", concurrency=4, shards="2,3")

    t = Traffic(cluster, app, pg_store)
    spread_users(t)
    asyncio.run(t.run_with(150, 50, kill, restart))
    t.check(stub)  # every message shown and delivered, none pushed twice
