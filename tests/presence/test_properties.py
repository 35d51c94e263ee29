"""Hypothesis property tests of the CRDT laws and of convergence under bad networks."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from presence.config import PresenceConfig
from presence.sim import SimCluster
from presence.state import Part, State
from presence.transport.memory import LinkPolicy
from tests.presence.presence_helpers import PROPS

pytestmark = pytest.mark.timeout(300)

KEYS = st.sampled_from(["u1", "u2", "u3", "u4"])
CONNS = st.sampled_from(["c1", "c2", "c3"])
OP = st.one_of(
    st.tuples(st.just("track"), KEYS, CONNS, st.integers(0, 2)),
    st.tuples(st.just("untrack"), KEYS, CONNS, st.just(0)),
    st.tuples(st.just("untrack_conn"), st.just(""), CONNS, st.just(0)),
)
OPS = st.lists(st.tuples(st.integers(0, 2), OP), max_size=40)


def apply(s: State, op: tuple[str, str, str, int]) -> None:
    kind, key, conn, v = op
    if kind == "track":
        s.track(key, conn, {"v": v} if v else None)
    elif kind == "untrack":
        s.untrack(key, conn)
    else:
        s.untrack_conn(conn)


def run_ops(ops: list[tuple[int, tuple[str, str, str, int]]]) -> list[State]:
    states = [State((f"r{i}", 1)) for i in range(3)]
    for who, op in ops:
        apply(states[who], op)
    return states


def fingerprint(s: State) -> tuple[object, ...]:
    snap = s.snapshot()
    return (
        sorted((o, sorted((k, dict(m)) for k, m in ents.items())) for o, ents in snap.items()),
        sorted(s.clock().items()),
    )


def observer_after(parts_seq: list[list[Part]]) -> State:
    obs = State(("obs", 1))
    for parts in parts_seq:
        obs.merge(parts)
    return obs


@PROPS
@given(OPS, st.randoms(use_true_random=False))
def test_merge_is_commutative_associative_idempotent(ops: list, rnd: random.Random) -> None:  # type: ignore[type-arg]
    states = run_ops(ops)
    extracts = [s.extract({}) for s in states]
    ref = fingerprint(observer_after(extracts))
    for perm in itertools.permutations(extracts):
        assert fingerprint(observer_after(list(perm))) == ref
    # idempotent: every extract merged twice, in random order
    doubled = extracts * 2
    rnd.shuffle(doubled)
    assert fingerprint(observer_after(doubled)) == ref
    # associative: merge (a ⊔ b) at one observer, then its state into another with c
    ab = observer_after(extracts[:2])
    final = observer_after([extracts[2], ab.extract({})])
    assert fingerprint(final) == ref
    # and the merged view is exactly the union of every replica's own entries
    truth = sorted((p.key, p.conn, p.node) for s in states for p in s.list_all())
    obs = observer_after(extracts)
    assert sorted((p.key, p.conn, p.node) for p in obs.list_all()) == truth


@PROPS
@given(
    st.lists(st.tuples(OP, st.booleans()), min_size=1, max_size=40),
    st.randoms(use_true_random=False),
)
def test_deltas_under_drop_duplicate_reorder_never_resurrect(
    ops: list[tuple[tuple[str, str, str, int], bool]], rnd: random.Random
) -> None:
    origin = State(("o", 1))
    history: dict[int, set[tuple[str, str, object]]] = {0: set()}
    deltas: list[Part] = []
    for op, cut in ops:
        apply(origin, op)
        if cut:
            d = origin.take_delta()
            if d is not None:
                deltas.append(d)
                history[d.end] = {(p.key, p.conn, repr(dict(p.meta))) for p in origin.list_all()}
    d = origin.take_delta()
    if d is not None:
        deltas.append(d)
        history[d.end] = {(p.key, p.conn, repr(dict(p.meta))) for p in origin.list_all()}
    # a hostile schedule: drops, duplicates and reorders
    schedule = [x for x in deltas for _ in range(rnd.choice([0, 1, 1, 2]))]
    rnd.shuffle(schedule)
    obs = State(("obs", 1))
    for part in schedule:
        res = obs.merge([part])
        have = obs.counter(origin.replica)
        got = {(p.key, p.conn, repr(dict(p.meta))) for p in obs.list_all()}
        # the observer is always exactly at some past state of the origin: a leave
        # is never undone, a stale delta never overwrites, gaps are refused
        assert got == history[have]
        for g in res.gaps:
            assert g.start > g.have
    # a transfer always repairs whatever the schedule lost
    obs.merge(origin.extract(obs.clock(), exclude=obs.replica))
    assert sorted(map(tuple, (p[:3] for p in obs.list_all()))) == sorted(
        map(tuple, (p[:3] for p in origin.list_all()))
    )


@PROPS
@given(OPS)
def test_own_entries_survive_any_remote_merge(ops: list) -> None:  # type: ignore[type-arg]
    states = run_ops(ops)
    me = states[0]
    mine = sorted(me.entries_of(me.replica))
    for other in states[1:]:
        other.merge(me.extract({}))
        me.merge(other.extract({}))
    me.merge(states[1].extract({}))
    assert sorted(me.entries_of(me.replica)) == mine


CFG = PresenceConfig(heartbeat_s=0.1, down_s=0.5, purge_s=3.0, batch_s=0.005)

SIM_STEP = st.one_of(
    st.tuples(st.just("op"), st.integers(0, 3), OP),
    st.tuples(st.just("wait"), st.floats(0.0, 0.3), st.just(None)),
    st.tuples(st.just("partition"), st.integers(1, 3), st.just(None)),
    st.tuples(st.just("heal"), st.just(0), st.just(None)),
)


@settings(PROPS, max_examples=max(5, PROPS.max_examples // 3))
@given(
    st.lists(SIM_STEP, max_size=30),
    st.integers(0, 2**16),
    st.floats(0.0, 0.4),
    st.floats(0.0, 0.4),
    st.floats(0.0, 0.02),
)
def test_cluster_converges_after_heal(
    steps: list,
    seed: int,
    loss: float,
    dup: float,
    jitter: float,  # type: ignore[type-arg]
) -> None:
    names = ["a", "b", "c", "d"]
    sim = SimCluster(
        names, seed=seed, config=CFG, policy=LinkPolicy(loss=loss, duplicate=dup, jitter=jitter)
    )
    sim.run(0.3)
    for kind, x, op in steps:
        if kind == "op":
            rep = sim.replicas[names[x]]
            k, key, conn, v = op
            if k == "track":
                rep.track(key, conn, {"v": v} if v else None)
            elif k == "untrack":
                rep.untrack(key, conn)
            else:
                rep.untrack_conn(conn)
        elif kind == "wait":
            sim.run(x)
        elif kind == "partition":
            sim.net.partition(names[:x], names[x:])
        else:
            sim.net.heal()
    truth = sorted(
        (p.key, p.conn, p.node) for r in sim.replicas.values() for p in r.state.entries_of(r.rid)
    )
    sim.net.heal()
    sim.net.default = LinkPolicy()
    sim.run(1.5)
    for n in names:
        assert sim.view(n) == truth, n


class PresenceModel(RuleBasedStateMachine):
    """The replicated view against a reference "who is online" model."""

    def __init__(self) -> None:
        super().__init__()
        self.sim = SimCluster(["a", "b", "c"], seed=1, config=CFG)
        self.sim.run(0.3)
        self.online: dict[str, set[tuple[str, str]]] = {n: set() for n in "abc"}

    @rule(node=st.sampled_from("abc"), key=KEYS, conn=CONNS)
    def track(self, node: str, key: str, conn: str) -> None:
        self.sim.replicas[node].track(key, conn)
        self.online[node].add((key, conn))

    @rule(node=st.sampled_from("abc"), key=KEYS, conn=CONNS)
    def untrack(self, node: str, key: str, conn: str) -> None:
        self.sim.replicas[node].untrack(key, conn)
        self.online[node].discard((key, conn))

    @rule(node=st.sampled_from("abc"), conn=CONNS)
    def disconnect(self, node: str, conn: str) -> None:
        self.sim.replicas[node].untrack_conn(conn)
        self.online[node] = {e for e in self.online[node] if e[1] != conn}

    @rule(dt=st.floats(0.0, 0.2))
    def wait(self, dt: float) -> None:
        self.sim.run(dt)

    @rule(node=st.sampled_from("abc"))
    def isolate(self, node: str) -> None:
        self.sim.net.isolate(node)

    @rule()
    def heal(self) -> None:
        self.sim.net.heal()

    @rule(node=st.sampled_from("abc"), graceful=st.booleans())
    def restart(self, node: str, graceful: bool) -> None:
        if graceful:
            self.sim.stop(node)
            self.sim.add(node)
        else:
            self.sim.restart(node)
        self.online[node] = set()

    @precondition(lambda self: True)
    @rule()
    def settle_and_compare(self) -> None:
        self.sim.net.heal()
        self.sim.run(1.0 + CFG.down_s)
        expected = sorted((k, c, n) for n, es in self.online.items() for k, c in es)
        for n in "abc":
            assert self.sim.view(n) == expected, n

    @invariant()
    def own_entries_match_model(self) -> None:
        for n, rep in self.sim.replicas.items():
            assert {(p.key, p.conn) for p in rep.state.entries_of(rep.rid)} == self.online[n]


TestPresenceModel = PresenceModel.TestCase
TestPresenceModel.settings = settings(
    PROPS, max_examples=max(5, PROPS.max_examples // 4), stateful_step_count=25
)
