"""The N=20 amplification case of issue 13, on the embedded stack (router, sweep, gateway,
in-process Celery worker, SQLite).

The fault: one user's 20 connections that never ack, closing one by one while messages flow,
made every close redirect each unacked frame to every remaining connection: attempt rows grew
with N² (251 rows per message at N=20) and route tasks with them, and an unrelated user waited
behind the backlog. Traffic: 20 connections of mallory (never ack, closed one every five
messages), 100 messages to mallory and 50 to ursula (one connection that acks) interleaved.
What must hold: attempt rows per mallory message stay within the per-message bound (attempts x
(targets cap + redirect budget x connections per user)), whatever the number of connections;
every ursula message is delivered. The connection limit is raised above 20 here, so the bound
comes from routing and the gateway alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from delivery.api import send_message
from delivery.gateway.tokens import issue_token
from delivery.models import IN_FLIGHT
from delivery.routing.policy import PolicyConfig
from delivery.settings import Settings
from workers.embedded import EmbeddedStack

N = 20
SECRET = "bounded-work-test-secret-0123456789"


async def hello(url: str, user: str) -> ClientConnection:
    ws = await connect(url, compression=None)
    await ws.send(json.dumps({"type": "hello", "token": issue_token(user, SECRET, 600)}))
    welcome = json.loads(await ws.recv())
    assert welcome["type"] == "welcome", welcome
    return ws


async def drain(ws: ClientConnection) -> None:
    """Read and never ack (a client that keeps messages unacknowledged)."""
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass


async def ack_all(ws: ClientConnection, seen: dict[str, float]) -> None:
    with contextlib.suppress(Exception):
        async for raw in ws:
            frame = json.loads(raw)
            if frame.get("type") == "message":
                seen.setdefault(frame["id"], time.monotonic())
                await ws.send(json.dumps({"type": "ack", "id": frame["id"]}))


def test_twenty_never_acking_connections_closing_one_by_one(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), secret=SECRET, ack_timeout_s=1.0,
                        sweep_interval_s=0.2, retry_backoff_s=0.2, offline_grace_s=0.1,
                        presence_heartbeat_s=0.05, presence_down_s=1.0, presence_purge_s=5.0)
    out: dict[str, Any] = {}

    async def main() -> None:
        async with EmbeddedStack(settings, gateways=("gw-a",)) as stack:
            gw = stack.gateways["gw-a"]
            gw.config = dataclasses.replace(gw.config, max_conns_per_user=64)
            url = stack.url("gw-a")
            mallory = [await hello(url, "mallory") for _ in range(N)]
            drains = [asyncio.create_task(drain(ws)) for ws in mallory]
            ursula = await hello(url, "ursula")
            seen: dict[str, float] = {}
            acker = asyncio.create_task(ack_all(ursula, seen))
            worker_view = stack.presence["worker-1"]
            deadline = time.monotonic() + 30
            while len(worker_view.list("mallory")) < N or not worker_view.list("ursula"):
                assert time.monotonic() < deadline, "presence never listed the connections"
                await asyncio.sleep(0.05)

            to_mallory: list[str] = []
            sent_at: dict[str, float] = {}
            for i in range(100):
                to_mallory.append(send_message("alice", "mallory", {"text": f"m{i}"},
                                               client_msg_id=f"m-{i}", app=stack.app))
                if i % 2 == 0:
                    mid = send_message("bob", "ursula", {"text": f"u{i}"},
                                       client_msg_id=f"u-{i}", app=stack.app)
                    sent_at[mid] = time.monotonic()
                if i % 5 == 4:
                    await mallory[i // 5].close()
                await asyncio.sleep(0.02)

            store = stack.store
            deadline = time.monotonic() + 120
            while True:
                msgs = await asyncio.to_thread(store.get_many, [*map(_uuid, to_mallory),
                                                                 *map(_uuid, sent_at)])
                states = {str(m.id): m.state for m in msgs}
                if (all(states.get(m) == "delivered" for m in sent_at)
                        and all(states.get(m) not in (None, *IN_FLIGHT) for m in to_mallory)):
                    break
                assert time.monotonic() < deadline, f"not settled: {states}"
                await asyncio.sleep(0.2)
            rows = [len(await asyncio.to_thread(store.attempts_of, _uuid(m)))
                    for m in to_mallory]
            out["rows"] = rows
            out["latency"] = [seen[m] - sent_at[m] for m in sent_at if m in seen]
            out["routing"] = dataclasses.asdict(stack.router.config)
            out["gateway"] = dataclasses.asdict(gw.config)
            out["stats"] = dict(gw.stats)
            acker.cancel()
            for t in drains:
                t.cancel()
            await ursula.close()

    asyncio.run(asyncio.wait_for(main(), 240))
    policy = PolicyConfig(**out["routing"])
    per_attempt = policy.max_targets + out["gateway"]["max_redirects"] * N
    bound = policy.max_attempts * per_attempt
    assert max(out["rows"]) <= bound, (max(out["rows"]), bound)
    # Re-routes the gateway asked for (one delivery.route each): at most one per attempt.
    assert out["stats"]["nacks"] <= len(out["rows"]) * policy.max_attempts, out["stats"]
    lat = sorted(out["latency"])
    print(f"\nN={N}: attempt rows per message max {max(out['rows'])} "
          f"mean {statistics.mean(out['rows']):.1f} (bound {bound}); "
          f"ursula latency p50 {lat[len(lat) // 2] * 1000:.0f} ms "
          f"max {lat[-1] * 1000:.0f} ms; gateway {out['stats']}")


def _uuid(s: str) -> Any:
    import uuid

    return uuid.UUID(s)
