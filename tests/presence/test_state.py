"""The pure state: unit tests and Phoenix ``state_test.exs`` behaviours ported to our API."""

from __future__ import annotations

import pytest

from presence.state import (
    EMPTY_META,
    DeltaPart,
    Event,
    GapError,
    SlicePart,
    State,
)
from tests.presence.presence_helpers import connected, extract_for, keys, new, view

# --------------------------------------------------------------- Phoenix ports


def test_that_this_is_set_up_correctly() -> None:
    a = new("a")
    assert a.extract(a.clock(), exclude=a.replica) == []
    assert a.list_all() == []
    assert a.clock() == {("a", 1): 0}


def test_user_added_online_is_online() -> None:
    a = new("a")
    a.track("john", "p1")
    assert keys(a.list("john")) == ["john"]
    a.untrack("john", "p1")
    assert a.list("john") == []


def test_users_from_other_servers_merge() -> None:
    a, b = connected(new("a"), new("b"))
    a.track("alice", "pa")
    b.track("bob", "pb")
    res = a.merge(extract_for(b, a))
    assert keys(res.joins) == ["bob"] and res.leaves == []
    assert keys(a.list_all()) == ["alice", "bob"]
    # merging twice doesn't dupe events
    before = view(a)
    res = a.merge(extract_for(b, a))
    assert not res.joins and not res.leaves and view(a) == before
    assert keys(b.merge(extract_for(a, b)).joins) == ["alice"]
    assert not b.merge(extract_for(a, b)).joins
    # observe remove
    a.untrack("alice", "pa")
    res = b.merge(extract_for(a, b))
    assert res.joins == [] and keys(res.leaves) == ["alice"]
    assert keys(b.list_all()) == ["bob"]
    assert not b.merge(extract_for(a, b))
    b.track("carol", "pc")
    assert keys(b.list_all()) == ["bob", "carol"]
    assert keys(a.merge(extract_for(b, a)).joins) == ["carol"]
    assert not a.merge(extract_for(b, a))
    assert view(a) == view(b)
    # update: a leave of the old meta and a join of the new one
    b.update("carol", "pc", {"updated": True})
    res = a.merge(extract_for(b, a))
    assert [p.meta for p in res.joins] == [{"updated": True}]
    assert [p.meta for p in res.leaves] == [EMPTY_META]
    assert not a.merge(extract_for(b, a))


def test_basic_netsplit() -> None:
    a, b = connected(new("a"), new("b"))
    a.track("alice", "pa")
    b.track("bob", "pb")
    assert keys(a.merge(extract_for(b, a)).joins) == ["bob"]
    assert keys(a.list_all()) == ["alice", "bob"]
    a.track("carol", "pc")
    a.untrack("alice", "pa")
    a.track("david", "pd")
    res = a.replica_down(b.replica)
    assert keys(res.leaves) == ["bob"] and res.joins == []
    assert keys(a.list_all()) == ["carol", "david"]
    assert not a.merge(extract_for(b, a)).joins  # merging a down replica's state shows nothing
    assert keys(a.list_all()) == ["carol", "david"]
    res = a.replica_up(b.replica)
    assert keys(res.joins) == ["bob"]
    assert keys(a.list_all()) == ["bob", "carol", "david"]


def test_joins_are_observed_via_other_node() -> None:
    a, b, c = connected(new("a"), new("b"), new("c"))
    a.track("alice", "pa")
    assert keys(c.merge(extract_for(a, c)).joins) == ["alice"]
    a.replica_down(c.replica)
    assert keys(c.replica_down(a.replica).leaves) == ["alice"]
    a.track("bob", "pb")
    assert keys(b.merge(extract_for(a, b)).joins) == ["alice", "bob"]
    # c learns bob through b, but a is down at c: nothing visible yet
    c.merge(extract_for(b, c))
    assert c.list("bob") == []
    assert keys(c.replica_up(a.replica).joins) == ["alice", "bob"]


def test_removes_are_observed_via_other_node() -> None:
    a, b, c = connected(new("a"), new("b"), new("c"))
    a.track("alice", "pa")
    c.merge(extract_for(a, c))
    a.track("bob", "pb")
    b.merge(extract_for(a, b))
    assert keys(c.merge(extract_for(b, c)).joins) == ["bob"]
    a.untrack("bob", "pb")
    assert keys(b.merge(extract_for(a, b)).leaves) == ["bob"]
    assert keys(c.merge(extract_for(b, c)).leaves) == ["bob"]


def test_get_by_conn() -> None:
    s = new("node1")
    assert s.get("topic", "p") is None
    s.track("key1", "p", {})
    p = s.get("key1", "p")
    assert p is not None and (p.key, p.conn, p.node) == ("key1", "p", "node1")
    assert s.get("key1", "nope") is None
    assert s.get("nokey", "p") is None


def test_get_by_key() -> None:
    s = new("node1")
    assert s.list("key1") == []
    s.track("key1", "p1", {"device": "browser"})
    s.track("key1", "p2", {"device": "ios"})
    s.track("key2", "p2", {"device": "ios"})
    assert sorted((p.conn, p.meta["device"]) for p in s.list("key1")) == [
        ("p1", "browser"),
        ("p2", "ios"),
    ]
    assert s.list("another_key") == []


def test_list_hides_down_replicas() -> None:
    s1, s2, s3 = connected(new("node1"), new("node2"), new("node3"))
    assert s1.clock() == {("node1", 1): 0, ("node2", 1): 0, ("node3", 1): 0}
    s1.track("key1", "p")
    s1.track("key2", "p")
    s2.track("user2", "p2")
    s3.track("user3", "p3")
    s1.merge(extract_for(s2, s1))
    s1.merge(extract_for(s3, s1))
    assert keys(s1.list_all()) == ["key1", "key2", "user2", "user3"]
    s1.replica_down(s2.replica)
    assert keys(s1.list_all()) == ["key1", "key2", "user3"]
    s1.replica_down(s3.replica)
    assert keys(s1.list_all()) == ["key1", "key2"]


def test_remove_down_replicas() -> None:
    s1, s2 = connected(new("node1"), new("node2"))
    s1.track("alice", "pa")
    s2.track("bob", "pb")
    s2.merge(extract_for(s1, s2))
    assert keys(s2.list_all()) == ["alice", "bob"]
    s2.replica_down(s1.replica)
    assert len(s2) == 2  # hidden, not gone
    s2.purge(s1.replica)
    assert len(s2) == 1
    s2.replica_up(s1.replica)
    assert keys(s2.list_all()) == ["bob"]
    # a purged replica's state never comes back through a merge
    s2.merge(s1.extract({}))
    assert keys(s2.list_all()) == ["bob"]


def test_basic_deltas() -> None:
    a, b = connected(new("a"), new("b"))
    a.track("alice", "pa")
    b.track("bob", "pb")
    d = a.take_delta()
    assert d is not None
    assert keys(b.merge([d]).joins) == ["alice"]
    assert b.clock() == {("a", 1): 1, ("b", 1): 1}
    a.untrack("alice", "pa")
    d = a.take_delta()
    assert d is not None
    assert keys(b.merge([d]).leaves) == ["alice"]
    assert b.clock() == {("a", 1): 2, ("b", 1): 1}
    a.track("alice", "pa")
    d = a.take_delta()
    assert d is not None
    assert keys(b.merge([d]).joins) == ["alice"]
    assert b.clock() == {("a", 1): 3, ("b", 1): 1}


def test_deltas_are_not_merged_for_non_contiguous_ranges() -> None:
    s1 = new("s1")
    s1.track("user1", "p1")
    d1 = s1.take_delta()
    s1.track("user2", "p2")
    s1.take_delta()
    s1.track("user3", "p3")
    d3 = s1.take_delta()
    assert d1 is not None and d3 is not None
    r = new("r")
    res = r.merge([d3])
    assert res.gaps and res.gaps[0].origin == s1.replica and r.list_all() == []
    with pytest.raises(GapError):
        r.merge_delta([d3])
    r.merge([d1])
    assert keys(r.list_all()) == ["user1"]
    assert r.merge([d3]).gaps  # still a hole at dot 2


def test_extracted_state_context_contains_only_what_remote_lacks() -> None:
    s1, s2 = connected(new("s1"), new("s2"))
    s3 = new("s3")
    s2.see(s3.replica)
    s1.track("user1", "p")
    s2.track("user2", "p")
    s3.track("user3", "p")
    s1.merge(extract_for(s2, s1))
    s2.merge(extract_for(s1, s2))
    s2.merge(extract_for(s3, s2))
    parts = extract_for(s2, s1)
    # s1 is up to date with s2's own entries; only s3 (unknown to s1) is sent
    assert [p.origin for p in parts] == [s3.replica]


def test_merging_deltas_from_two_replicas() -> None:
    s1, s2 = new("s1"), new("s2")
    s1.track("user1", "u1")
    s1.track("user1", "u1b")
    s2.track("user2", "u2")
    s2.track("user2", "u2b")
    d1, d2 = s1.take_delta(), s2.take_delta()
    assert d1 is not None and d2 is not None
    r = new("r")
    r.merge([d1, d2])
    assert view(r) == sorted(view(s1) + view(s2))
    assert r.clock() == {("r", 1): 0, ("s1", 1): 2, ("s2", 1): 2}


def test_merging_deltas_with_removes_keeps_tombstones() -> None:
    s1 = new("s1")
    s1.track("user1", "lobby")
    s1.track("user1", "private")
    d1 = s1.take_delta()
    s1.untrack("user1", "private")
    d2 = s1.take_delta()
    assert d1 is not None and d2 is not None
    assert [e.meta for e in d2.events] == [None]
    r = new("r")
    r.merge([d1])
    r.merge([d2])
    assert view(r) == [("user1", "lobby", "s1")]
    # duplicates and stale deltas change nothing: the leave is not undone
    assert not r.merge([d1]) and not r.merge([d2])
    assert view(r) == [("user1", "lobby", "s1")]


# ------------------------------------------------------------ our own laws


def test_local_delta_compacts_to_last_event_per_entry() -> None:
    s = new("s")
    s.track("k", "c", {"v": 1})
    s.track("k", "c", {"v": 2})
    s.untrack("k", "c")
    s.track("k", "c", {"v": 3})
    d = s.take_delta()
    assert d == DeltaPart(s.replica, 0, 4, (Event(4, "k", "c", {"v": 3}),))
    assert s.take_delta() is None


def test_overlapping_delta_applies_only_new_events() -> None:
    s = new("s")
    s.track("a", "c1")
    d1 = s.take_delta()
    s.untrack("a", "c1")
    s.track("b", "c2")
    d2 = s.take_delta()
    assert d1 is not None and d2 is not None
    r = new("r")
    r.merge([d1, d2])
    # a delta spanning both ranges (0, 3] re-delivered: nothing changes
    both = DeltaPart(s.replica, 0, 3, (*d1.events, *d2.events))
    assert not r.merge([both])
    assert view(r) == [("b", "c2", "s")]


def test_own_entries_never_removed_by_remote_merge() -> None:
    a, _b = connected(new("a"), new("b"))
    a.track("alice", "pa")
    # b forges a slice of a's origin with a higher counter and no entries
    forged = SlicePart(a.replica, 99, ())
    res = a.merge([forged, DeltaPart(a.replica, 0, 5, (Event(1, "alice", "pa", None),))])
    assert not res.leaves
    assert keys(a.list_all()) == ["alice"]


def test_stale_slice_never_overwrites_newer_state() -> None:
    a = new("a")
    a.track("k", "c1")
    old = a.extract({})
    a.untrack("k", "c1")
    a.track("k", "c2")
    r = new("r")
    r.merge(a.extract({}))
    assert not r.merge(old)  # Phoenix #148: a late transfer must not win
    assert view(r) == [("k", "c2", "a")]


def test_newer_incarnation_purges_older_on_sight() -> None:
    old = State(("gw", 1))
    old.track("alice", "c-old")
    r = new("r")
    r.merge(old.extract({}))
    assert keys(r.list_all()) == ["alice"]
    newer = State(("gw", 2))
    newer.track("bob", "c-new")
    res = r.merge(newer.extract({}))
    assert res.superseded == [("gw", 1)]
    assert keys(res.leaves) == ["alice"] and keys(res.joins) == ["bob"]
    # the old incarnation's state relayed by anyone later is ignored
    assert not r.merge(old.extract({})).joins
    assert view(r) == [("bob", "c-new", "gw")]


def test_own_older_incarnation_is_ignored() -> None:
    old = State(("me", 1))
    old.track("alice", "c")
    me = State(("me", 2))
    assert not me.merge(old.extract({})).joins
    assert me.list_all() == []
    assert me.is_purged(("me", 1))


def test_untrack_conn_removes_every_key_of_the_conn() -> None:
    s = new("s")
    s.track("k1", "c")
    s.track("k2", "c")
    s.track("k3", "other")
    gone = s.untrack_conn("c")
    assert keys(gone) == ["k1", "k2"]
    assert keys(s.list_all()) == ["k3"]
    assert s.untrack_conn("c") == []


def test_untrack_unknown_is_a_noop_and_consumes_no_dot() -> None:
    s = new("s")
    assert s.untrack("nobody", "c") is None
    assert s.clock()[s.replica] == 0 and s.take_delta() is None


def test_track_twice_same_meta_is_a_noop() -> None:
    s = new("s")
    p1 = s.track("k", "c", {"a": 1})
    p2 = s.track("k", "c", {"a": 1})
    assert p1 == p2 and p1.meta is p2.meta and s.clock()[s.replica] == 1 and len(s) == 1


def test_update_without_presence_returns_none() -> None:
    s = new("s")
    assert s.update("k", "c", {"x": 1}) is None
    assert len(s) == 0


def test_extract_prefers_smallest_delta_from_log() -> None:
    s = new("s")
    for i in range(50):
        s.track(f"k{i}", "c")
    r = new("r")
    r.merge(s.extract({}))
    s.track("k-new", "c")
    parts = s.extract(r.clock(), exclude=r.replica)
    assert len(parts) == 1 and isinstance(parts[0], DeltaPart)
    assert len(parts[0].events) == 1
    r.merge(parts)
    assert view(r) == view(s)


def test_extract_falls_back_to_slice_when_log_is_short() -> None:
    s = State(("s", 1), log_size=2)
    for i in range(10):
        s.track(f"k{i}", "c")
    r = new("r")
    s2 = s.extract({})
    r.merge(s2)
    for i in range(5):
        s.untrack(f"k{i}", "c")
    parts = s.extract(r.clock(), exclude=r.replica)
    assert isinstance(parts[0], SlicePart)
    res = r.merge(parts)
    assert keys(res.leaves) == [f"k{i}" for i in range(5)]
    assert view(r) == view(s)


def test_list_is_a_copy_safe_to_mutate() -> None:
    s = new("s")
    s.track("k", "c1")
    s.track("k", "c2")
    got = s.list("k")
    got.clear()
    assert len(s.list("k")) == 2


def test_purge_hidden_replica_reports_no_leaves() -> None:
    a, b = connected(new("a"), new("b"))
    b.track("bob", "pb")
    a.merge(extract_for(b, a))
    assert keys(a.replica_down(b.replica).leaves) == ["bob"]
    assert a.purge(b.replica).leaves == []
    assert len(a) == 0 and b.replica not in a.clock()


# ------------------------------------------------- bulk paths (merge of large batches)


def _bulk_source(n: int, *, repeat_key_every: int = 0) -> State:
    src = new("src")
    for i in range(n):
        key = f"u{i // 2}" if repeat_key_every and i % repeat_key_every == 0 else f"u{i}"
        src.track(key, f"c{i}", {"i": i} if i % 3 else None)
    return src


@pytest.mark.parametrize("n", [1, 10, 6_000])
@pytest.mark.parametrize("shape", ["fresh", "repeated_key", "key_held_by_other_origin"])
def test_bulk_merge_equals_entry_by_entry(n: int, shape: str) -> None:
    """The bulk insert and its fallbacks give what applying one event at a time gives."""
    src = _bulk_source(n, repeat_key_every=4 if shape == "repeated_key" else 0)
    delta = src.take_delta()
    assert delta is not None
    slice_parts = src.extract({})
    for parts in ([delta], slice_parts):
        bulk, one_by_one = new("dst"), new("dst")
        for s in (bulk, one_by_one):
            s.track("zz", "own")
            if shape == "key_held_by_other_origin":
                s.track("u0", "own-u0")
        res = bulk.merge(parts)
        for ev in delta.events:  # the reference: one event per part
            one_by_one.merge([DeltaPart(delta.origin, ev.n - 1, ev.n, (ev,))])
        assert view(bulk) == view(one_by_one) and len(bulk) == len(one_by_one)
        assert sorted(res.joins) == sorted(p for p in bulk.list_all() if p.node == "src")
        assert bulk.snapshot() == one_by_one.snapshot()
        assert bulk.clock()[src.replica] == src.clock()[src.replica]
        assert not bulk.merge(parts)  # idempotent
        quiet = new("dst")
        assert not quiet.merge(parts, diffs=False).joins and len(quiet) == len(src)


def test_bulk_operations_leave_the_collector_as_they_found_it() -> None:
    import gc

    src = _bulk_source(6_000)
    parts = src.extract({})
    assert gc.isenabled()
    new("a").merge(parts)
    assert gc.isenabled()
    gc.disable()
    try:
        new("b").merge(parts)
        assert not gc.isenabled()  # left alone: someone else disabled it
    finally:
        gc.enable()
