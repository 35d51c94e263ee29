"""``/healthz`` checks the gateway's Redis and database; ``/readyz`` also wants a synced presence
replica. Real sockets, a Redis server of the test's own that it stops, a database that is gone."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

from delivery.db import make_engine
from delivery.settings import Settings
from delivery.store import Store
from tests.delivery.gateway.conftest import SECRET, gateway_harness, run
from workers.devkit.procs import free_port
from workers.devkit.services import PrivateRedis


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


async def get(port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(_get, f"http://127.0.0.1:{port}{path}")


def test_probes_follow_redis_and_database(sqlite_store: Store, tmp_path: Path) -> None:
    redis_server = PrivateRedis(str(tmp_path), appendonly=False)
    redis_server.start()

    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            port = h.gateway.port
            h.runtime.settings = Settings(secret=SECRET, redis_url=redis_server.url,
                                          broker_url=redis_server.url)
            await h.wait_for(lambda: bool(h.presence.stats().get("synced")))
            for path in ("/healthz", "/readyz"):
                status, body = await get(port, path)
                assert status == 200 and body.startswith("ok gw1"), (path, body)

            redis_server.stop()
            status, body = await get(port, "/healthz")
            assert status == 503 and body.startswith("redis: "), body
            assert (await get(port, "/readyz"))[0] == 503

            # The database goes away too: both lines.
            dead = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/gone")
            store, h.runtime.store = h.runtime.store, Store(dead)
            try:
                status, body = await get(port, "/healthz")
            finally:
                h.runtime.store = store
                dead.dispose()
            assert status == 503, body
            assert {line.split(":")[0] for line in body.splitlines()} == {"redis", "database"}

    try:
        run(main())
    finally:
        redis_server.stop()


def test_embedded_gateway_is_healthy_without_redis(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            await h.wait_for(lambda: bool(h.presence.stats().get("synced")))
            assert (await get(h.gateway.port, "/healthz"))[0] == 200
            assert (await get(h.gateway.port, "/readyz"))[0] == 200

    run(main())
