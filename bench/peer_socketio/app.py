"""The peer's Celery app: one task that looks the user up and emits through Socket.IO.

Celery's defaults, as a team would start from them (JSON, early acks, no result stored), on the
same Redis broker as ours with a key prefix of its own.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
import socketio
from celery import Celery

from bench.peer_socketio import config

app = Celery("peer", broker=config.redis_url())
app.conf.update(
    task_ignore_result=True,
    broker_transport_options={"global_keyprefix": f"{config.prefix()}:celery:"},
    worker_hijack_root_logger=False,
)

_lock = threading.Lock()
_clients: dict[str, Any] = {}


def _shared() -> tuple[redis.Redis, socketio.RedisManager]:
    """One Redis client and one write-only Socket.IO manager per worker process."""
    with _lock:
        if not _clients:
            _clients["redis"] = redis.Redis.from_url(config.redis_url())
            _clients["sio"] = socketio.RedisManager(config.redis_url(), channel=config.channel(),
                                                    write_only=True)
        return _clients["redis"], _clients["sio"]


@app.task(name=config.SEND_TASK)
def send(user: str, message_id: str, body: Any) -> bool:
    r, sio = _shared()
    if not r.sismember(config.online_key(), user):
        return False  # offline: this design drops it (no store, no push)
    sio.emit(config.EVENT, {"id": message_id, "body": body, "sent_at": time.time()}, room=user)
    return True
