"""A python-socketio server node (aiohttp) of the peer: ``python -m bench.peer_socketio.server``.

Each connection names its user in the Socket.IO ``auth`` payload; the server puts it in a room
named after the user and adds the user to the online set. Emits from the Celery task arrive
through the Redis manager and go to the room's connections on this node.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import redis.asyncio as aioredis
import socketio
from aiohttp import web

from bench.peer_socketio import config


def build(port: int) -> web.Application:
    mgr = socketio.AsyncRedisManager(config.redis_url(), channel=config.channel())
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=mgr)
    r = aioredis.Redis.from_url(config.redis_url())
    app = web.Application()
    sio.attach(app)

    @sio.event  # type: ignore[untyped-decorator,unused-ignore]
    async def connect(sid: str, environ: dict[str, Any], auth: dict[str, Any] | None) -> bool:
        user = str((auth or {}).get("user", ""))
        if not user:
            return False
        await sio.enter_room(sid, user)
        await r.sadd(config.online_key(), user)
        return True

    async def announce(_app: web.Application) -> None:
        print(f"peer-socketio listening on http://127.0.0.1:{port}", flush=True)

    app.on_startup.append(announce)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_socketio.server")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    web.run_app(build(args.port), host="127.0.0.1", port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
