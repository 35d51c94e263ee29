"""Three replicas in separate processes over real Redis: joins, kill -9, restart, partition."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.presence.presence_helpers import Agent, prefix
from workers.devkit.procs import wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

HB, DOWN, PURGE = 0.1, 0.6, 2.0


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    return wait_until(cond, timeout, interval=0.02)


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    made: list[Agent] = []
    yield made
    for a in made:
        a.close()


def start(agents: list[Agent], p: str, name: str) -> Agent:
    a = Agent(p, name, heartbeat=HB, down=DOWN, purge=PURGE)
    agents.append(a)
    return a


def conns(a: Agent, key: str) -> list[str]:
    rows = a.call("list", key=key)
    assert isinstance(rows, list)
    return sorted(r[1] for r in rows)


def test_join_visible_everywhere_then_kill9_down_purge_and_restart(agents: list[Agent]) -> None:
    p = prefix()
    n0, n1, n2 = (start(agents, p, f"n{i}") for i in range(3))
    for a in (n0, n1, n2):
        assert a.call("wait_synced", timeout=5.0) is True
    n0.call("track", key="alice", conn="a-1")
    n2.call("track", key="carol", conn="c-old")
    for a in (n0, n1, n2):
        assert wait_for(lambda a=a: conns(a, "alice") == ["a-1"], 3)
        assert wait_for(lambda a=a: conns(a, "carol") == ["c-old"], 3)

    n2.kill9()
    killed = time.monotonic()
    time.sleep(DOWN * 0.5)
    assert conns(n0, "carol") == ["c-old"]  # not hidden before the down period
    for a in (n0, n1):
        assert wait_for(lambda a=a: conns(a, "carol") == [], DOWN + 1.0)
    assert time.monotonic() - killed >= DOWN * 0.8
    stats = n0.call("stats")
    assert isinstance(stats, dict) and len(stats["replicas_down"]) == 1
    # purged after the purge period: the entry is gone, not just hidden
    assert wait_for(lambda: n0.call("stats")["entries"] == 1, PURGE + 2.0)  # type: ignore[index]
    assert n0.call("stats")["replicas_down"] == []  # type: ignore[index]

    # restart: a new incarnation, no ghost of the old one
    agents.remove(n2)
    n2b = start(agents, p, "n2")
    assert n2b.incarnation != n2.incarnation
    assert n2b.call("wait_synced", timeout=5.0) is True
    n2b.call("track", key="carol", conn="c-new")
    for a in (n0, n1, n2b):
        assert wait_for(lambda a=a: conns(a, "carol") == ["c-new"], 3)
        assert conns(a, "alice") == ["a-1"]


def test_restart_before_down_period_purges_old_incarnation_on_sight(agents: list[Agent]) -> None:
    p = prefix()
    n0, n1 = start(agents, p, "m0"), start(agents, p, "m1")
    n1.call("track", key="dave", conn="d-old")
    assert wait_for(lambda: conns(n0, "dave") == ["d-old"], 3)
    n1.kill9()
    agents.remove(n1)
    n1b = start(agents, p, "m1")
    # seen long before the down period would have hidden the old entries
    assert wait_for(lambda: conns(n0, "dave") == [], DOWN * 0.8)
    n1b.call("track", key="dave", conn="d-new")
    assert wait_for(lambda: conns(n0, "dave") == ["d-new"], 2)


def test_paused_subscription_partition_then_resume_converges(agents: list[Agent]) -> None:
    p = prefix()
    n0, n1, n2 = (start(agents, p, f"p{i}") for i in range(3))
    for a in (n0, n1, n2):
        a.call("wait_synced", timeout=5.0)
    n0.call("track", key="u0", conn="x0")
    assert wait_for(lambda: conns(n1, "u0") == ["x0"], 3)
    n1.call("pause")
    n0.call("track", key="u1", conn="x1")
    n0.call("untrack", key="u0", conn="x0")
    n1.call("track", key="u2", conn="x2")
    n2.call("track", key="u3", conn="x3")
    time.sleep(DOWN + 0.3)  # long enough for both sides to call the other down
    assert conns(n1, "u1") == [] and conns(n0, "u2") == []
    n1.call("resume")

    def same() -> bool:
        views = [a.call("list_all") for a in (n0, n1, n2)]
        return views[0] == views[1] == views[2] and len(views[0]) == 3  # type: ignore[arg-type]

    assert wait_for(same, 5)
    assert conns(n1, "u0") == []  # the leave made during the partition is not undone
