"""Batch planning (pure): when to flush buffered sends, and one frame list per gateway node."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from delivery.gateway.protocol import Deliver
from delivery.routing.batch import by_node, take
from delivery.routing.policy import Conn


def test_a_lone_send_with_an_idle_pool_is_flushed_at_once() -> None:
    assert take(1, 0, max_inflight=2, max_batch=64) == 1


def test_sends_wait_while_every_batch_slot_runs() -> None:
    assert take(5, 2, max_inflight=2, max_batch=64) == 0


def test_a_backlog_is_flushed_up_to_the_largest_batch() -> None:
    assert take(100, 1, max_inflight=2, max_batch=64) == 64


def test_sends_of_one_broker_fetch_wait_for_its_last_one() -> None:
    assert take(3, 0, max_inflight=2, max_batch=64, arriving=True) == 0
    assert take(3, 0, max_inflight=2, max_batch=64, arriving=False) == 3


def test_nothing_buffered_flushes_nothing() -> None:
    assert take(0, 0, max_inflight=2, max_batch=64) == 0


@given(buffered=st.integers(0, 500), inflight=st.integers(0, 8),
       max_inflight=st.integers(1, 8), max_batch=st.integers(1, 128), arriving=st.booleans())
def test_take_never_exceeds_the_limits_and_never_strands_work(
    buffered: int, inflight: int, max_inflight: int, max_batch: int, arriving: bool,
) -> None:
    n = take(buffered, inflight, max_inflight=max_inflight, max_batch=max_batch,
             arriving=arriving)
    assert 0 <= n <= min(buffered, max_batch)
    # A free slot, something buffered and the fetch handed over: something is flushed now (no
    # timer to wait for).
    assert (n > 0) == (buffered > 0 and inflight < max_inflight and not arriving)


def _frame(i: int) -> Deliver:
    return Deliver(id=f"m{i}", user=f"u{i}", sender="a", body={"i": i}, sent_at="t", seq=i,
                   attempt=1)


targets = st.lists(st.tuples(st.sampled_from(["gw-a", "gw-b", "gw-c"]),
                             st.text("abc", min_size=1, max_size=3)),
                   min_size=1, max_size=5, unique=True)


@given(st.lists(targets, max_size=20))
def test_by_node_sends_every_target_once_in_claim_order(plan: list[list[tuple[str, str]]]
                                                        ) -> None:
    planned = [(_frame(i), [Conn(n, c) for n, c in ts]) for i, ts in enumerate(plan)]
    out = by_node(planned)
    sent = sorted((node, f.id, c) for node, fs in out.items() for f in fs for c in f.conns)
    want = sorted((n, f"m{i}", c) for i, ts in enumerate(plan) for n, c in ts)
    assert sent == want
    for node, frames in out.items():
        ids = [int(f.id[1:]) for f in frames]
        assert ids == sorted(set(ids)), "one frame per message and node, in claim order"
        assert all(f.conns and f.body == {"i": int(f.id[1:])} for f in frames)
        assert node in {"gw-a", "gw-b", "gw-c"}


def test_by_node_groups_two_messages_for_one_node_into_one_list() -> None:
    out = by_node([(_frame(1), [Conn("gw-a", "c1"), Conn("gw-b", "c2")]),
                   (_frame(2), [Conn("gw-a", "c3")])])
    assert {n: [(f.id, f.conns) for f in fs] for n, fs in out.items()} == {
        "gw-a": [("m1", ("c1",)), ("m2", ("c3",))], "gw-b": [("m1", ("c2",))]}
