"""A real local cluster for end-to-end tests: two gateways and two Celery workers as
subprocesses on Redis and PostgreSQL, the FCM stub standing in for Google's servers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from delivery.celery_app import make_app
from delivery.client import DeliveryClient
from delivery.gateway.tokens import issue_token
from delivery.push.stub import FcmStub
from delivery.settings import Settings
from delivery.store import MessageRecord, Store
from workers.devkit.cluster import LocalCluster
from workers.devkit.services import REDIS_URL, ServiceEnv

FAST = {
    "DELIVERY_ACK_TIMEOUT_S": "1.0",
    "DELIVERY_SWEEP_INTERVAL_S": "0.2",
    "DELIVERY_OFFLINE_GRACE_S": "0.2",
    "DELIVERY_RETRY_BACKOFF_S": "0.3",
    "DELIVERY_PRESENCE_HEARTBEAT_S": "0.1",
    "DELIVERY_PRESENCE_DOWN_S": "6.0",
    "DELIVERY_PRESENCE_PURGE_S": "20.0",
    "DELIVERY_FCM_PROJECT": "e2e",
}


@pytest.fixture(scope="session")
def stub() -> Iterator[FcmStub]:
    with FcmStub() as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh_stub(request: pytest.FixtureRequest) -> None:
    if "stub" in request.fixturenames:
        request.getfixturevalue("stub").reset()


@pytest.fixture(scope="session")
def cluster_env(pg_url: str, run_prefix: str, stub: FcmStub) -> dict[str, str]:
    """One cluster for the e2e tests (starting one takes seconds); tests use distinct users."""
    services = ServiceEnv(pg_url, REDIS_URL, f"{run_prefix}:e2e-{uuid.uuid4().hex[:6]}")
    return services.env(DELIVERY_FCM_URL=stub.url, **FAST)


@pytest.fixture(scope="session")
def cluster(cluster_env: dict[str, str]) -> Iterator[LocalCluster]:
    with LocalCluster(cluster_env) as c:
        c.start_gateway("gw-a")
        c.start_gateway("gw-b")
        c.start_worker("wb1", concurrency=4)
        c.start_worker("wb2", concurrency=4)
        yield c


@pytest.fixture(scope="session")
def app(cluster_env: dict[str, str]) -> Iterator[Celery]:
    a = make_app(Settings.from_env(cluster_env))
    yield a
    a.close()


def token(user: str, env: dict[str, str]) -> str:
    return issue_token(user, env["DELIVERY_SECRET"], 3600)


def client(cluster: LocalCluster, node: str, user: str, **kw: Any) -> DeliveryClient:
    return DeliveryClient(cluster.gateways[node].url, token(user, cluster.env), **kw)


def user() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


def send(app: Celery, recipient: str, text: str, sender: str = "alice") -> str:
    from delivery.api import send_message

    return send_message(sender, recipient, {"text": text}, client_msg_id=uuid.uuid4().hex,
                        app=app)


def workers_see(app: Celery, user: str, conns: set[str], timeout: float = 10.0) -> None:
    """Wait until every worker's replica lists exactly ``conns`` for ``user``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        replies = app.control.broadcast("presence_who", arguments={"user": user}, reply=True,
                                        timeout=1.0)
        last = replies
        seen = [{c for _, c in next(iter(r.values()))["conns"]} for r in replies]
        if len(seen) >= 2 and all(s == conns for s in seen):
            return
        time.sleep(0.1)
    raise AssertionError(f"workers never saw {conns} for {user}: {last}")


def hold_presence(app: Celery, seconds: float) -> None:
    replies = app.control.broadcast("presence_hold", arguments={"seconds": seconds}, reply=True,
                                    timeout=2.0)
    assert len(replies) >= 2, replies


def wait_state(store: Store, msg_id: str, states: set[str], timeout: float = 20.0
               ) -> MessageRecord:
    deadline = time.monotonic() + timeout
    msg = None
    while time.monotonic() < deadline:
        msg = store.get(uuid.UUID(msg_id))
        if msg is not None and msg.state in states:
            return msg
        time.sleep(0.05)
    raise AssertionError(f"message {msg_id} never reached {states}: {msg}")


async def receive_ids(c: DeliveryClient, n: int, timeout: float = 20.0) -> list[str]:
    out: list[str] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append((await c.receive()).id)
    return out
