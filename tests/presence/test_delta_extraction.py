"""Phoenix ``delta_generation_test.exs`` behaviours: the smallest sufficient transfer.

Phoenix keeps merged "delta generations"; we keep a per-origin log of recent
events and choose per origin between a delta from the log and the whole slice.
"""

from __future__ import annotations

from presence.state import DeltaPart, SlicePart, State
from tests.presence.presence_helpers import new, view


def _grow(s: State, n: int, prefix: str = "user") -> None:
    for i in range(n):
        s.track(f"{prefix}{i}", "c")


def test_generations_delta_covers_exactly_the_missing_range() -> None:
    s1 = new("s1")
    r = new("r")
    s1.track("user1", "c")
    r.merge(s1.extract({}))
    for i in (2, 3, 4):
        s1.track(f"user{i}", "c")
        parts = s1.extract(r.clock(), exclude=r.replica)
        assert len(parts) == 1 and isinstance(parts[0], DeltaPart)
        assert parts[0].start == r.counter(s1.replica)
        assert [e.key for e in parts[0].events] == [
            f"user{j}" for j in range(r.counter(s1.replica) + 1, i + 1)
        ]
    r.merge(s1.extract(r.clock()))
    assert view(r) == view(s1)


def test_duplicate_merges_have_no_effect() -> None:
    s1 = new("s1")
    s1.track("user1", "c")
    d = s1.take_delta()
    assert d is not None
    r = new("r")
    r.merge([d])
    before = (view(r), r.clock())
    assert not r.merge([d])
    assert (view(r), r.clock()) == before


def test_does_not_include_non_contiguous_deltas() -> None:
    s3 = new("s3")
    s3.track("user3", "a")
    old = s3.take_delta()
    s3.track("user3", "b")
    s3.take_delta()
    s3.track("user3", "c")
    newest = s3.take_delta()
    assert old is not None and newest is not None
    r = new("r")
    r.merge([old])
    assert r.merge([newest]).gaps
    assert [p.conn for p in r.list("user3")] == ["a"]


def test_remove_down_replicas_from_transfers() -> None:
    s1, s2, s3 = new("s1"), new("s2"), new("s3")
    s2.track("user2", "c")
    s1.merge(s2.extract({}))
    s1.purge(s2.replica)
    s3.merge(s1.extract(s3.clock(), exclude=s3.replica))
    assert s3.list("user2") == []


def test_whole_state_is_extracted_if_there_are_no_deltas() -> None:
    s1 = new("r1")
    s1.track("user1", "p")
    parts = s1.extract({}, exclude=("r2", 1))
    assert parts == [SlicePart(s1.replica, 1, (("user1", "p", s1.list("user1")[0].meta),))]


def test_delta_is_extracted_for_the_first_sufficient_log_range() -> None:
    s1 = new("r1")
    s1.track("user1", "p")
    s1.track("user2", "p")
    parts = s1.extract({s1.replica: 1})
    assert parts == [DeltaPart(s1.replica, 1, 2, tuple(e for e in parts[0].events))]  # type: ignore[union-attr]
    assert [e.key for e in parts[0].events] == ["user2"]  # type: ignore[union-attr]


def test_an_up_to_date_remote_gets_nothing() -> None:
    s1 = new("r1")
    s1.track("user1", "p")
    assert s1.extract(s1.clock()) == []


def test_slice_is_sent_when_smaller_than_delta() -> None:
    s1 = new("r1")
    s1.track("k", "c")
    r = new("r")
    r.merge(s1.extract({}))
    for i in range(20):  # many events on one entry: the slice (1 entry) is smaller
        s1.track("k", "c", {"i": i})
        s1.track(f"tmp{i}", "c")
        s1.untrack(f"tmp{i}", "c")
    parts = s1.extract(r.clock(), exclude=r.replica)
    assert isinstance(parts[0], SlicePart) and len(parts[0].entries) == 1
    r.merge(parts)
    assert view(r) == view(s1)


def test_big_state_transfer_roundtrip() -> None:
    s = new("big")
    _grow(s, 2000)
    r = new("r")
    res = r.merge(s.extract({}))
    assert len(res.joins) == 2000 and view(r) == view(s)
