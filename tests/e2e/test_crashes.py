"""kill -9 a gateway, kill -9 a worker, restart Redis — all mid-traffic, on a private Redis so
restarting it disturbs nothing else. Every message must reach exactly one outcome, no push may
be sent twice, and every message ends delivered once the clients are back."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from delivery.celery_app import make_app
from delivery.client import DeliveryClient
from delivery.clock import utcnow
from delivery.push.stub import FcmStub
from delivery.settings import Settings
from delivery.store import Store
from tests.e2e.conftest import FAST, send, token
from tests.support.services import ServiceEnv
from workers.cluster import LocalCluster
from workers.procs import Proc

pytestmark = pytest.mark.slow

USERS = 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own, with an append-only file so a restart keeps the
    queued tasks (an operator's restart, not a disk loss)."""

    def __init__(self, tmp: str) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Proc | None = None

    def start(self) -> None:
        self.proc = Proc("redis", [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--dir", self.tmp,
        ], {})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"private redis did not start:\n{self.proc.log()}")

    def restart(self) -> None:
        redis.Redis.from_url(self.url).shutdown(nosave=False)
        assert self.proc is not None
        self.proc.popen.wait(10)
        self.proc.stop()
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:  # type: ignore[no-untyped-def]
    r = PrivateRedis(str(tmp_path))
    r.start()
    yield r
    r.stop()


@pytest.fixture
def stub() -> Iterator[FcmStub]:
    with FcmStub() as s:
        yield s


@pytest.fixture
def crash_env(pg_url: str, private_redis: PrivateRedis, stub: FcmStub) -> dict[str, str]:
    env = ServiceEnv(pg_url, private_redis.url, f"crash-{uuid.uuid4().hex[:6]}").env(
        DELIVERY_FCM_URL=stub.url, **FAST)
    # Tasks held by a worker killed with -9 come back after this (kombu's redis transport).
    env["DELIVERY_VISIBILITY_TIMEOUT_S"] = "4"
    return env


class Traffic:
    """USERS online clients (half of them with a push device) receiving a steady stream."""

    def __init__(self, cluster: LocalCluster, app: Celery, store: Store) -> None:
        self.cluster, self.app, self.store = cluster, app, store
        self.users = [f"crash-{uuid.uuid4().hex[:6]}-{i}" for i in range(USERS)]
        self.clients: dict[str, DeliveryClient] = {}
        self.received: dict[str, Counter[str]] = {u: Counter() for u in self.users}
        self.sent: dict[str, str] = {}

    async def connect(self) -> None:
        for i, u in enumerate(self.users):
            if i % 2 == 0:
                self.store.register_device(u, f"tok-{u}", "android", utcnow())
            node = "gw-a" if i % 2 == 0 else "gw-b"
            c = DeliveryClient(self.cluster.gateways[node].url, token(u, self.cluster.env),
                               backoff_initial_s=0.05, backoff_max_s=0.5)
            await c.connect()
            self.clients[u] = c
            asyncio.get_running_loop().create_task(self._drain(u, c))

    async def _drain(self, u: str, c: DeliveryClient) -> None:
        async for m in c:
            self.received[u][m.id] += 1

    async def send(self, n: int, rate: float) -> None:
        for i in range(n):
            u = self.users[i % USERS]
            self.sent[send(self.app, u, f"m{i}")] = u
            await asyncio.sleep(1 / rate)

    async def settle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.received[u][m] >= 1 for m, u in self.sent.items()):
                return
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()

    def check(self, stub: FcmStub) -> None:
        missing = [m for m, u in self.sent.items() if self.received[u][m] == 0]
        states = Counter()
        for m in self.sent:
            msg = self.store.get(uuid.UUID(m))
            assert msg is not None, f"message {m} was never stored"
            states[msg.state] += 1
            acked = [a for a in self.store.attempts_of(msg.id) if a.result == "acked"]
            assert len(acked) <= 1, f"{m} has two outcomes: {acked}"
        assert not missing, f"{len(missing)} messages never shown; states {states}"
        pushes = Counter(r["body"]["message"]["data"]["message_id"] for r in stub.requests
                         if r["answer"] == "OK")
        assert all(n == 1 for n in pushes.values()), f"pushed twice: {pushes.most_common(3)}"
        # Every message shown on a client is acked: the store must agree.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and states.get("delivered", 0) < len(self.sent):
            time.sleep(0.2)
            states = Counter(self.store.get(uuid.UUID(m)).state for m in self.sent)  # type: ignore[union-attr]
        assert states == {"delivered": len(self.sent)}, states


@pytest.fixture
def crash_cluster(crash_env: dict[str, str]) -> Iterator[tuple[LocalCluster, Celery]]:
    with LocalCluster(crash_env) as c:
        c.start_gateway("gw-a")
        c.start_gateway("gw-b")
        c.start_worker("cw1", concurrency=4)
        c.start_worker("cw2", concurrency=4)
        app = make_app(Settings.from_env(crash_env))
        yield c, app
        app.close()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_kill_a_gateway_with_frames_in_flight(
    crash_cluster: tuple[LocalCluster, Celery], pg_store: Store, stub: FcmStub
) -> None:
    cluster, app = crash_cluster

    async def scenario() -> None:
        t = Traffic(cluster, app, pg_store)
        await t.connect()
        sending = asyncio.create_task(t.send(150, rate=60))
        await asyncio.sleep(1.0)
        port = _port(cluster.gateways["gw-b"].url)
        cluster.gateways["gw-b"].proc.kill9()
        await asyncio.sleep(1.0)
        cluster.start_gateway("gw-b", port=port)  # clients reconnect and get the replay
        await sending
        await t.settle(40)
        await t.close()
        t.check(stub)

    asyncio.run(scenario())


def test_kill_a_worker_with_routes_in_flight(
    crash_cluster: tuple[LocalCluster, Celery], pg_store: Store, stub: FcmStub
) -> None:
    cluster, app = crash_cluster

    async def scenario() -> None:
        t = Traffic(cluster, app, pg_store)
        await t.connect()
        sending = asyncio.create_task(t.send(150, rate=60))
        await asyncio.sleep(1.0)
        cluster.workers["cw1"].kill9()
        await sending
        cluster.start_worker("cw1", concurrency=4)
        await t.settle(40)
        await t.close()
        t.check(stub)

    asyncio.run(scenario())


def test_restart_redis_mid_traffic(
    crash_cluster: tuple[LocalCluster, Celery], pg_store: Store, stub: FcmStub,
    private_redis: PrivateRedis,
) -> None:
    cluster, app = crash_cluster

    async def scenario() -> None:
        t = Traffic(cluster, app, pg_store)
        await t.connect()
        sending = asyncio.create_task(t.send(120, rate=40))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(private_redis.restart)
        await sending
        await t.settle(40)
        await t.close()
        t.check(stub)

    asyncio.run(scenario())
