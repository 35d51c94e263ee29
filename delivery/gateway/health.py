"""The gateway's probes, served on its WebSocket port next to ``/ws``.

- ``GET /healthz``: this node can do its job: its Redis (presence, node channels) answers PING
  and its database answers ``SELECT 1``, each within ``CHECK_TIMEOUT_S``. 200 ``ok ...`` or 503
  with one line per failed dependency. For container health checks.
- ``GET /readyz``: healthy, and also its presence replica has synced and it is not shutting
  down: it should get new connections. 200 or 503. For the load balancer.

Checks run off the event loop (a thread each), so a hung dependency never stalls the sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

from delivery.runtime import Runtime

PATHS = ("/healthz", "/readyz")
CHECK_TIMEOUT_S = 2.0


class Probed(Protocol):
    """What the probes read of a gateway (``delivery.gateway.server.Gateway``)."""

    @property
    def node(self) -> str: ...
    @property
    def runtime(self) -> Runtime: ...
    @property
    def presence(self) -> object: ...  # its replica's ``stats()["synced"]``, when it has one
    @property
    def conns(self) -> Mapping[str, object]: ...


def _ping_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=CHECK_TIMEOUT_S,
                                  socket_timeout=CHECK_TIMEOUT_S)
    try:
        client.ping()
    finally:
        client.close()


async def _check(name: str, func: Callable[..., object], *args: object) -> str | None:
    """None when ``func(*args)`` succeeds in time, else a line saying what failed."""
    try:
        await asyncio.wait_for(asyncio.to_thread(func, *args), CHECK_TIMEOUT_S + 1)
    except TimeoutError:
        return f"{name}: no answer within {CHECK_TIMEOUT_S:g}s"
    except Exception as exc:
        detail = str(exc).strip().splitlines()
        return f"{name}: {type(exc).__name__}: {detail[0] if detail else ''}".rstrip(": ")
    return None


async def problems(gateway: Probed, ready: bool) -> list[str]:
    """What is wrong with ``gateway`` (a ``Gateway``); empty when healthy (and ready)."""
    runtime = gateway.runtime
    checks = []
    if runtime.settings.redis_url:
        checks.append(_check("redis", _ping_redis, runtime.settings.redis_url))
    ping = getattr(runtime.store, "ping", None)
    if ping is not None:
        checks.append(_check("database", ping))
    found = [p for p in await asyncio.gather(*checks) if p]
    if ready:
        if getattr(gateway, "_stopping", False):
            found.append("gateway: shutting down")
        stats = getattr(gateway.presence, "stats", None)
        if callable(stats) and not stats().get("synced", True):
            found.append("presence: replica not synced yet")
    return found


async def _respond(gateway: Probed, connection: ServerConnection, path: str) -> Response:
    found = await problems(gateway, ready=path == "/readyz")
    if found:
        return connection.respond(503, "".join(f"{p}\n" for p in found))
    return connection.respond(200, f"ok {gateway.node} {len(gateway.conns)}\n")


def respond(gateway: Probed, connection: ServerConnection,
            path: str) -> Awaitable[Response] | None:
    """The probe's response for ``path`` (websockets awaits it), or None for other paths."""
    if path not in PATHS:
        return None
    return _respond(gateway, connection, path)
