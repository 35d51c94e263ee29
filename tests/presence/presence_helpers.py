"""Shared helpers for the presence tests (imported as a plain module)."""

from __future__ import annotations

import os
import uuid

from hypothesis import HealthCheck, settings

from presence.state import Part, Presence, Rid, State

REDIS_URL = os.environ.get("DELIVERY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

PROPS = settings(
    max_examples=int(os.environ.get("PRESENCE_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def new(name: str, inc: int = 1) -> State:
    return State((name, inc))


def keys(ps: list[Presence]) -> list[str]:
    return sorted(p.key for p in ps)


def connected(*states: State) -> list[State]:
    """Make every state know every other (like Phoenix's given_connected_cluster)."""
    for s in states:
        for o in states:
            if o is not s:
                s.see(o.replica)
    return list(states)


def extract_for(src: State, dst: State) -> list[Part]:
    return src.extract(dst.clock(), exclude=dst.replica)


def view(s: State) -> list[tuple[str, str, str]]:
    return sorted((p.key, p.conn, p.node) for p in s.list_all())


def rid(s: State) -> Rid:
    return s.replica
