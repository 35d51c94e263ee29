"""Phoenix ``clock_test.exs`` behaviours on :mod:`tests.presence.clock`."""

from __future__ import annotations

from tests.presence import clock as C


def test_dominates() -> None:
    c1 = {"a": 1, "b": 2, "c": 3}
    c2 = {"b": 2, "c": 3, "d": 1}
    c3 = {"a": 1, "b": 2}
    assert C.dominates(c1, c3)
    assert not C.dominates(c3, c1)
    assert not C.dominates(c1, c2)
    assert C.dominates(c1, c1)


def test_the_set_trims() -> None:
    clock1 = ("a", {"a": 1, "b": 2, "c": 3})
    clock2 = ("b", {"b": 2, "c": 3, "d": 1})
    clock3 = ("c", {"a": 1, "b": 2})

    def srt(cs: list[tuple[str, dict[str, int]]]) -> list[tuple[str, dict[str, int]]]:
        return sorted(cs, key=lambda x: x[0])

    assert srt(C.append_clock([clock2, clock3], clock1)) == [clock2, clock3]  # type: ignore[arg-type]
    assert srt(C.append_clock([clock1, clock2], clock3)) == [clock1, clock2]  # type: ignore[arg-type]
    assert srt(C.append_clock([clock1, clock2], clock1)) == [clock1, clock2]  # type: ignore[arg-type]
    assert srt(C.append_clock([clock1, clock2], clock2)) == [clock1, clock2]  # type: ignore[arg-type]
    assert srt(C.append_clock([clock1, clock3], clock2)) == [clock1, clock2, clock3]  # type: ignore[arg-type]
    got = C.clockset_replicas(C.append_clock([clock2, clock3], clock1))  # type: ignore[arg-type]
    assert sorted(got) == ["b", "c"]


def test_upperbound() -> None:
    assert C.upperbound({"a": 1, "b": 2, "c": 2}, {"a": 3, "b": 1, "d": 2}) == {
        "a": 3,
        "b": 2,
        "c": 2,
        "d": 2,
    }
    assert C.upperbound({}, {"a": 3, "b": 1, "d": 2}) == {"a": 3, "b": 1, "d": 2}
    assert C.upperbound({"a": 3, "b": 1, "d": 2}, {}) == {"a": 3, "b": 1, "d": 2}


def test_lowerbound() -> None:
    assert C.lowerbound({"a": 1, "b": 2, "c": 2}, {"a": 3, "b": 1, "d": 2}) == {
        "a": 1,
        "b": 1,
        "c": 2,
        "d": 2,
    }
    assert C.lowerbound({}, {"a": 3, "b": 1, "d": 2}) == {"a": 3, "b": 1, "d": 2}
    assert C.lowerbound({"a": 3, "b": 1, "d": 2}, {}) == {"a": 3, "b": 1, "d": 2}


def test_filter_replicas() -> None:
    c = {"a": 1, "b": 2, "c": 3}
    assert C.filter_replicas(c, ["a", "b"]) == {"a": 1, "b": 2}
    assert C.filter_replicas(c, ["a", "c"]) == {"a": 1, "c": 3}
    assert C.filter_replicas(c, ["a", "d"]) == {"a": 1}
    assert C.filter_replicas(c, ["d"]) == {}


def test_replicas() -> None:
    assert C.replicas({}) == []
    assert C.replicas({"a": 1}) == ["a"]
    assert sorted(C.replicas({"a": 1, "b": 2})) == ["a", "b"]


def test_dominates_or_equal() -> None:
    assert C.dominates_or_equal({}, {})
    assert not C.dominates_or_equal({}, {"a": 1})
    assert C.dominates_or_equal({"a": 2}, {"a": 1, "b": 5})
    assert not C.dominates_or_equal({"a": 1}, {"a": 2})
