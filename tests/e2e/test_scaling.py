"""Scaling on real processes: traffic flowing with one worker, add two, remove one (warm
shutdown). A joining worker syncs presence before it consumes a task (so it never sends an
online user to push); a leaving worker hands back what it held. Nothing lost, no pushes."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import pytest
from celery import Celery

from delivery.celery_app import make_app
from delivery.push.stub import FcmStub
from delivery.settings import Settings
from delivery.store import Store
from tests.e2e.traffic import Traffic
from workers.devkit.cluster import LocalCluster

pytestmark = pytest.mark.slow


@pytest.fixture
def scaling_cluster(cluster_env: dict[str, str]) -> Iterator[tuple[LocalCluster, Celery]]:
    env = {**cluster_env, "DELIVERY_KEY_PREFIX": cluster_env["DELIVERY_KEY_PREFIX"] + "-scale"}
    with LocalCluster(env) as c:
        c.start_gateway("gw-a")
        c.start_gateway("gw-b")
        c.start_worker("s1", concurrency=4)
        app = make_app(Settings.from_env(env))
        yield c, app
        app.close()


def test_add_two_workers_then_remove_one_mid_traffic(
    scaling_cluster: tuple[LocalCluster, Celery], pg_store: Store, stub: FcmStub
) -> None:
    cluster, app = scaling_cluster

    async def add_two_remove_one() -> None:
        await asyncio.to_thread(cluster.start_worker, "s2", concurrency=4)
        await asyncio.to_thread(cluster.start_worker, "s3", concurrency=4)
        await asyncio.sleep(1.0)
        leaving = cluster.workers.pop("s1")
        await asyncio.to_thread(leaving.stop, signal.SIGTERM, 30.0)  # warm shutdown
        assert "warm shutdown" in leaving.log().lower()

    t = Traffic(cluster, app, pg_store, with_devices=False)
    asyncio.run(t.run_with(240, 40, add_two_remove_one))
    t.check(stub)
    # No burst of unnecessary pushes: every recipient was online the whole time.
    states = pg_store.count_by_state()
    assert states == {"delivered": sum(states.values())}, states
    assert stub.requests == []
