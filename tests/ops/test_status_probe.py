"""``delivery status`` as a probe: a documented non-zero exit when no worker answers, when the
broker or presence Redis is down and when the database cannot be reached."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workers.commands.status import EXIT_BROKER, EXIT_DATABASE, EXIT_NO_WORKER
from workers.devkit.procs import delivery_cmd, free_port
from workers.devkit.services import PrivateRedis, ServiceEnv

pytestmark = pytest.mark.slow


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(str(tmp_path), appendonly=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def status(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    proc = delivery_cmd("status", ["status", "--json", "--timeout", "1"], env)
    rc = proc.popen.wait(60)
    out = proc.log()
    proc.stop()
    return rc, json.loads(out[out.index("{"):])


def codes(summary: dict[str, Any]) -> set[int]:
    return {p["code"] for p in summary["problems"]}


def test_no_worker_then_broker_down(services: ServiceEnv, private_redis: PrivateRedis) -> None:
    # Broker and presence on a Redis of this test's own: no worker of anyone can answer there.
    env = services.env(DELIVERY_BROKER_URL=private_redis.url,
                       DELIVERY_REDIS_URL=private_redis.url)
    rc, summary = status(env)
    assert rc == EXIT_NO_WORKER, summary
    assert codes(summary) == {EXIT_NO_WORKER}
    assert summary["presence"]["synced"] is True

    private_redis.stop()
    rc, summary = status(env)
    assert rc == EXIT_BROKER, summary
    assert "presence" in summary and "error" in summary["presence"]
    assert codes(summary) >= {EXIT_BROKER, 5}


def test_database_unreachable(services: ServiceEnv) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    rc, summary = status(services.env(DELIVERY_DATABASE_URL=dead))
    assert rc == EXIT_DATABASE, summary
    assert "DELIVERY_DATABASE_URL" in summary["problems"][0]["what"]
