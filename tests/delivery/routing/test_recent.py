"""RecentConnections: the last connection presence saw end, bounded in time and size."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from delivery.routing.policy import Conn
from delivery.routing.recent import RecentConnections


class P(NamedTuple):
    key: str
    conn: str
    node: str


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_leave_is_remembered_as_the_last_connection() -> None:
    r = RecentConnections(clock=Clock())
    assert r.last("alice") is None
    r.on_diff([P("alice", "c2", "gw-b")], [P("alice", "c1", "gw-a")])
    assert r.last("alice") == Conn("gw-a", "c1")
    r.on_diff([], [P("alice", "c2", "gw-b")])
    assert r.last("alice") == Conn("gw-b", "c2")  # the newest leave wins


def test_forgotten_after_ttl() -> None:
    clock = Clock()
    r = RecentConnections(ttl_s=60.0, clock=clock)
    r.on_diff([], [P("alice", "c1", "gw-a")])
    clock.t += 59.0
    assert r.last("alice") == Conn("gw-a", "c1")
    clock.t += 2.0
    assert r.last("alice") is None
    assert len(r) == 0


def test_bounded_size_drops_the_oldest_leave() -> None:
    r = RecentConnections(max_users=2, clock=Clock())
    r.on_diff([], [P("a", "c1", "g"), P("b", "c2", "g")])
    r.on_diff([], [P("a", "c3", "g"), P("c", "c4", "g")])
    assert len(r) == 2
    assert r.last("b") is None and r.last("a") == Conn("g", "c3")


def test_bad_bounds() -> None:
    with pytest.raises(ValueError):
        RecentConnections(ttl_s=0)
    with pytest.raises(ValueError):
        RecentConnections(max_users=0)
