"""Names shared by the peer's roles, derived from ``PEER_REDIS_URL`` and ``PEER_PREFIX``."""

from __future__ import annotations

import os

SEND_TASK = "peer.send"
EVENT = "message"


def redis_url() -> str:
    return os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0")


def prefix() -> str:
    return os.environ.get("PEER_PREFIX", "peer")


def online_key() -> str:
    """The set of users with a live Socket.IO connection (the team's presence)."""
    return f"{prefix()}:online"


def channel() -> str:
    """python-socketio's Redis manager channel shared by the servers and the task."""
    return f"{prefix()}:socketio"
