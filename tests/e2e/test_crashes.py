"""kill -9 a gateway, kill -9 a worker, restart Redis — all mid-traffic, on a private Redis so
restarting it disturbs nothing else. Every message must reach exactly one outcome, no push may
be sent twice, and every message ends delivered once the clients are back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from delivery.celery_app import make_app
from delivery.push.stub import FcmStub
from delivery.settings import Settings
from delivery.store import Store
from tests.e2e.conftest import FAST
from tests.e2e.traffic import Traffic
from tests.support.services import ServiceEnv
from workers.cluster import LocalCluster
from workers.procs import Proc, free_port

pytestmark = pytest.mark.slow


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

    async def kill_and_restart_gateway() -> None:
        port = _port(cluster.gateways["gw-b"].url)
        cluster.gateways["gw-b"].proc.kill9()
        await asyncio.sleep(1.0)
        # Same port: the clients reconnect and get the replay.
        await asyncio.to_thread(cluster.start_gateway, "gw-b", port=port)

    t = Traffic(cluster, app, pg_store)
    asyncio.run(t.run_with(150, 60, kill_and_restart_gateway))
    t.check(stub)


def test_kill_a_worker_with_routes_in_flight(
    crash_cluster: tuple[LocalCluster, Celery], pg_store: Store, stub: FcmStub
) -> None:
    cluster, app = crash_cluster

    async def kill_worker() -> None:
        cluster.workers["cw1"].kill9()

    async def restart_worker() -> None:
        await asyncio.to_thread(cluster.start_worker, "cw1", concurrency=4)

    # Durable sends: a worker killed between kombu's BRPOP and its "unacked" bookkeeping takes
    # the task with it (not yet accepted); storing first makes the message survive that too.
    t = Traffic(cluster, app, pg_store, durable=True)
    asyncio.run(t.run_with(150, 60, kill_worker, restart_worker))
    t.check(stub)


def test_restart_redis_mid_traffic(
    crash_cluster: tuple[LocalCluster, Celery], pg_store: Store, stub: FcmStub,
    private_redis: PrivateRedis,
) -> None:
    cluster, app = crash_cluster

    async def restart_redis() -> None:
        await asyncio.to_thread(private_redis.restart)

    # Durable sends: kombu's Redis transport pops a task destructively (BRPOP), so a task
    # whose reply is in flight when Redis shuts down is gone; storing first makes the message
    # survive that (the sweep routes it). See delivery.api.send_message.
    t = Traffic(cluster, app, pg_store, durable=True)
    asyncio.run(t.run_with(120, 40, restart_redis))
    t.check(stub)
