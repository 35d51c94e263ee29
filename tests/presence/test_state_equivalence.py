"""Today's State (per-origin tables, shared metas) behaves exactly like the one it replaced.

The previous implementation (one tuple per entry) is kept in ``bench/presence_v1`` as the
reference. Both are driven by the same random programs — local operations on three
replicas, deltas delivered late, twice or never, transfers, down / up / purge, a newer
incarnation — and must agree after every step on what they list, store and report.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from bench.presence_v1 import state as v1
from presence import wire
from presence.state import DeltaPart, Event, SlicePart, State
from tests.presence.presence_helpers import PROPS

KEYS = ["u1", "u2", "u3", "u4", "u5"]
CONNS = ["c1", "c2", "c3"]
# metas: none, equal ones built apart, a value whose type differs from an equal one (1 / True)
METAS: list[dict[str, Any] | None] = [None, {"v": 1}, {"v": True}, {"v": "x", "w": 2.5}, {}]

R = st.integers(0, 2)
STEP = st.one_of(
    st.tuples(
        st.just("track"), R, st.sampled_from(KEYS), st.sampled_from(CONNS), st.integers(0, 4)
    ),
    st.tuples(st.just("untrack"), R, st.sampled_from(KEYS), st.sampled_from(CONNS), st.just(0)),
    st.tuples(st.just("untrack_conn"), R, st.just(""), st.sampled_from(CONNS), st.just(0)),
    st.tuples(
        st.just("update"), R, st.sampled_from(KEYS), st.sampled_from(CONNS), st.integers(0, 4)
    ),
    st.tuples(st.just("flush"), R, st.just(""), st.just(""), st.just(0)),
    # deliver the i-th delta produced so far (late, duplicated or never) to replica r
    st.tuples(st.just("deliver"), R, st.just(""), st.just(""), st.integers(0, 30)),
    st.tuples(st.just("transfer"), R, st.just(""), st.just(""), R),
    st.tuples(st.just("down"), R, st.just(""), st.just(""), R),
    st.tuples(st.just("up"), R, st.just(""), st.just(""), R),
    st.tuples(st.just("purge"), R, st.just(""), st.just(""), R),
    st.tuples(st.just("bulk"), R, st.just(""), st.just(""), st.integers(1, 40)),
    st.tuples(st.just("reincarnate"), R, st.just(""), st.just(""), st.just(0)),
)


def _rows(ps: Any) -> list[tuple[Any, ...]]:
    return sorted((p.key, p.conn, p.node, sorted(dict(p.meta).items()), p.origin) for p in ps)


def _view(s: Any) -> tuple[Any, ...]:
    snap = {
        o: sorted((k, sorted(dict(m).items())) for k, m in e.items())
        for o, e in s.snapshot().items()
    }
    return (
        snap,
        s.clock(),
        len(s),
        {k: _rows(s.list(k)) for k in KEYS + [f"b{i}" for i in range(40)]},
        _rows(s.list_all()),
        sorted(s.down),
        sorted(s.purged),
    )


def _res(r: Any) -> tuple[Any, ...]:
    return (_rows(r.joins), _rows(r.leaves), r.gaps, r.new_origins, r.superseded)


def _to_v1(parts: list[Any]) -> list[Any]:
    out: list[Any] = []
    for p in parts:
        if type(p) is DeltaPart:
            out.append(
                v1.DeltaPart(p.origin, p.start, p.end, tuple(v1.Event(*e) for e in p.events))
            )
        else:
            out.append(v1.SlicePart(p.origin, p.counter, tuple(p.entries)))
    return out


class Pair:
    """The same replica in both implementations."""

    def __init__(self, rid: tuple[str, int]) -> None:
        self.new, self.old = State(rid), v1.State(rid)

    def both(self, f: str, *args: Any) -> None:
        a, b = getattr(self.new, f)(*args), getattr(self.old, f)(*args)
        assert _norm(a) == _norm(b), f

    def check(self) -> None:
        assert _view(self.new) == _view(self.old)


def _norm(x: Any) -> Any:
    if x is None or isinstance(x, int):
        return x
    if isinstance(x, list):
        return _rows(x)
    if hasattr(x, "joins"):
        return _res(x)
    return _rows([x])


@PROPS
@given(st.lists(STEP, max_size=60))
# a key held by two origins, one of them down
@example(
    [
        ("track", 0, "u1", "c1", 0),
        ("track", 1, "u1", "c1", 0),
        ("flush", 1, "", "", 0),
        ("down", 0, "", "", 1),
        ("up", 0, "", "", 1),
        ("purge", 0, "", "", 1),
    ]
)
# several connections of a key on one origin, with different metas, then a transfer
@example(
    [
        ("track", 1, "u1", "c1", 1),
        ("track", 1, "u1", "c2", 3),
        ("track", 1, "u2", "c1", 0),
        ("update", 1, "u1", "c1", 2),
        ("flush", 1, "", "", 0),
        ("untrack", 1, "u1", "c2", 0),
        ("transfer", 0, "", "", 1),
        ("untrack_conn", 1, "", "c1", 0),
        ("flush", 1, "", "", 0),
        ("deliver", 2, "", "", 0),
        ("transfer", 2, "", "", 1),
    ]
)
def test_same_behaviour_as_the_tuple_per_entry_state(steps: list[tuple[Any, ...]]) -> None:
    pairs = [Pair((f"r{i}", 1)) for i in range(3)]
    deltas: list[tuple[Any, Any]] = []  # (new part, old part) in production order
    for kind, who, key, conn, arg in steps:
        p = pairs[who]
        if kind in ("track", "update"):
            meta = METAS[arg]
            p.both(kind, key, conn, dict(meta) if meta is not None else None)
        elif kind == "untrack":
            p.both("untrack", key, conn)
        elif kind == "untrack_conn":
            p.both("untrack_conn", conn)
        elif kind == "flush":
            a, b = p.new.take_delta(), p.old.take_delta()
            assert (a is None) == (b is None)
            if a is not None:
                # through the wire, as a replica receives it
                got = wire.decode(wire.encode_delta(a.origin, [a])).parts[0]
                deltas.append((got, b))
                for q in pairs:  # broadcast at once (later deliveries are late or duplicates)
                    if q is not p:
                        assert _res(q.new.merge([got])) == _res(q.old.merge([b]))
        elif kind == "deliver" and deltas:
            a, b = deltas[arg % len(deltas)]
            assert _res(p.new.merge([a])) == _res(p.old.merge([b]))
        elif kind == "transfer":
            src = pairs[arg]
            a = src.new.extract(p.new.clock(), exclude=p.new.replica)
            b = src.old.extract(p.old.clock(), exclude=p.old.replica)
            assert _to_v1(a) == b
            a = wire.decode(wire.encode_ack(src.new.replica, p.new.replica, 1, a)).parts
            assert _res(p.new.merge(a)) == _res(p.old.merge(b))
        elif kind in ("down", "up", "purge"):
            origin = pairs[arg].new.replica
            f = {"down": "replica_down", "up": "replica_up", "purge": "purge"}[kind]
            p.both(f, origin)
        elif kind == "bulk":  # a big slice or delta of a gateway no one else writes as
            origin = ("gw", 7)
            # one meta for all, or a mix (the table's default meta and others)
            ents = tuple(
                (f"b{i}", f"bc{i}", {"node": "gw", "m": i % (arg % 3 + 1)}) for i in range(arg)
            )
            sl = SlicePart(origin, arg, ents)
            assert _res(p.new.merge([sl])) == _res(p.old.merge(_to_v1([sl])))
            evs = tuple(Event(arg + i + 1, f"b{i}", f"bc{i}", None) for i in range(0, arg, 2))
            d = DeltaPart(origin, arg, 2 * arg + 1, evs)
            assert _res(p.new.merge([d])) == _res(p.old.merge(_to_v1([d])))
        elif kind == "reincarnate":  # a newer incarnation of another replica is heard
            other = pairs[(who + 1) % 3].new.replica
            newer = (other[0], other[1] + 1)
            assert _res(p.new.see(newer)) == _res(p.old.see(newer))
        for q in pairs:
            q.check()


@PROPS
@given(
    st.lists(
        st.tuples(st.sampled_from(KEYS), st.sampled_from(CONNS), st.integers(0, 4)), max_size=30
    )
)
def test_equal_metas_are_stored_once(tracks: list[tuple[str, str, int]]) -> None:
    s = State(("a", 1))
    for key, conn, m in tracks:
        meta = METAS[m]
        s.track(key, conn, dict(meta) if meta is not None else None)
    seen: dict[Any, int] = {}
    for p in s.list_all():
        k = (tuple(p.meta.items()), tuple(map(type, p.meta.values())))
        seen.setdefault(k, id(p.meta))
        assert seen[k] == id(p.meta)  # one object per distinct meta
    # ... and a value of another type is not merged with an equal one (1 vs True)
    s.track("x", "c", {"v": 1})
    s.track("y", "c", {"v": True})
    assert type(s.list("x")[0].meta["v"]) is int and type(s.list("y")[0].meta["v"]) is bool


def test_a_callers_meta_mutated_later_changes_no_stored_entry() -> None:
    s = State(("a", 1))
    mine = {"device": "ios"}
    s.track("x", "c1", mine)
    s.track("y", "c2", {"device": "ios"})
    mine["device"] = "android"
    assert [dict(p.meta) for p in s.list("x") + s.list("y")] == [{"device": "ios"}] * 2
