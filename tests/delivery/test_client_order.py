"""The clients' per-conversation order buffer (delivery/client_order.py): one test per rule, and
properties over random arrival orders, losses, duplicates and clocks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery.client_order import Fed, OrderBuffer, Ready, Skipped


def seqs(out: Sequence[Ready[Any] | Skipped]) -> list[object]:
    return [(o.seq, o.late) if isinstance(o, Ready) else ("skip", o.first, o.last) for o in out]


def test_an_unknown_conversation_starts_before_its_first_message() -> None:
    buf: OrderBuffer[str] = OrderBuffer(2.0)
    assert buf.feed("c", 7, 6, "m7", 0.0) == Fed("held", [])  # waits for 6
    assert buf.feed("d", 7, 0, "d7", 0.0) == Fed("ready", [Ready("d", 7, "d7")])
    assert seqs(buf.tick(2.0)) == [("skip", 1, 6), (7, False)]
    assert buf.last_presented("c") == 7 and buf.next_deadline() is None


def test_the_next_seq_is_presented_at_once() -> None:
    buf: OrderBuffer[str] = OrderBuffer(2.0)
    buf.resume("c", 4)
    assert seqs(buf.feed("c", 5, 4, "m5", 0.0).out) == [(5, False)]


def test_a_later_seq_waits_for_the_missing_one_then_both_come_in_order() -> None:
    buf: OrderBuffer[str] = OrderBuffer(2.0)
    buf.resume("c", 0)
    fed = buf.feed("c", 2, 1, "m2", 10.0)
    assert fed.status == "held" and fed.out == []
    assert buf.next_deadline() == 12.0 and buf.is_held("c", 2)
    assert buf.tick(11.9) == []
    fed = buf.feed("c", 1, 0, "m1", 11.9)
    assert fed.out == [Ready("c", 1, "m1"), Ready("c", 2, "m2")]
    assert buf.next_deadline() is None


def test_at_the_bound_the_gap_is_skipped_and_the_held_frames_presented() -> None:
    buf: OrderBuffer[str] = OrderBuffer(2.0)
    buf.resume("c", 0)
    buf.feed("c", 3, 2, "m3", 0.0)
    buf.feed("c", 4, 3, "m4", 0.5)
    buf.feed("c", 7, 6, "m7", 1.0)
    out = buf.tick(2.0)  # m3's bound; m7 (bound 3.0) waits on its own gap
    assert seqs(out) == [("skip", 1, 2), (3, False), (4, False)]
    assert buf.next_deadline() == 3.0
    assert seqs(buf.tick(3.0)) == [("skip", 5, 6), (7, False)]


def test_prev_names_the_one_to_wait_for_when_others_took_seqs_between() -> None:
    # This user gets seqs 2, 5 and 9 of the conversation (the rest went to other members).
    buf: OrderBuffer[str] = OrderBuffer(2.0)
    buf.resume("c", 0)
    assert buf.feed("c", 5, 2, "m5", 0.0).status == "held"  # waits for 2, not for 4
    assert seqs(buf.feed("c", 9, 5, "m9", 0.1).out) == []
    assert seqs(buf.feed("c", 2, 0, "m2", 0.2).out) == [(2, False), (5, False), (9, False)]
    assert seqs(buf.feed("c", 12, 9, "m12", 0.3).out) == [(12, False)]


def test_prev_zero_is_the_first_message_for_this_user() -> None:
    buf: OrderBuffer[str] = OrderBuffer(2.0)
    buf.resume("c", 0)
    assert seqs(buf.feed("c", 40, 0, "m40", 0.0).out) == [(40, False)]


def test_a_later_frame_due_first_releases_the_earlier_held_ones_before_it() -> None:
    buf: OrderBuffer[str] = OrderBuffer(2.0)
    buf.resume("c", 0)
    buf.feed("c", 5, 4, "m5", 0.0)  # due at 2.0
    buf.feed("c", 3, 2, "m3", 1.0)  # due at 3.0, but it comes before m5
    assert seqs(buf.tick(2.0)) == [("skip", 1, 2), (3, False), ("skip", 4, 4), (5, False)]


def test_a_skipped_seq_arriving_late_is_presented_once_flagged_late() -> None:
    buf: OrderBuffer[str] = OrderBuffer(1.0)
    buf.resume("c", 0)
    buf.feed("c", 4, 3, "m4", 0.0)
    buf.tick(1.0)
    assert buf.feed("c", 2, 1, "m2", 5.0) == Fed("ready", [Ready("c", 2, "m2", True)])
    assert buf.feed("c", 2, 1, "m2", 5.0).status == "duplicate"
    assert seqs(buf.feed("c", 1, 0, "m1", 5.0).out) == [(1, True)]
    assert seqs(buf.feed("c", 3, 2, "m3", 5.0).out) == [(3, True)]


def test_a_copy_of_a_presented_or_held_seq_is_a_duplicate() -> None:
    buf: OrderBuffer[str] = OrderBuffer(2.0)
    buf.resume("c", 0)
    buf.feed("c", 1, 0, "m1", 0.0)
    assert buf.feed("c", 1, 0, "m1", 0.1).status == "duplicate"
    buf.feed("c", 3, 2, "m3", 0.2)
    assert buf.feed("c", 3, 2, "m3", 0.3) == Fed("duplicate", [])
    assert buf.held() == 1


def test_a_seq_before_the_start_is_presented_late() -> None:
    buf: OrderBuffer[str] = OrderBuffer(2.0)
    buf.resume("c", 10)  # shown up to 10 in an earlier run
    assert seqs(buf.feed("c", 9, 8, "m9", 0.1).out) == [(9, True)]
    assert buf.feed("c", 9, 8, "m9", 0.1).status == "duplicate"
    assert seqs(buf.feed("c", 11, 10, "m11", 0.1).out) == [(11, False)]


def test_conversations_are_independent() -> None:
    buf: OrderBuffer[str] = OrderBuffer(2.0)
    buf.resume("a", 0)
    buf.resume("b", 0)
    assert buf.feed("a", 2, 1, "a2", 0.0).status == "held"
    assert seqs(buf.feed("b", 1, 0, "b1", 0.0).out) == [(1, False)]
    assert buf.held() == 1


def test_resume_does_not_move_a_conversation_backwards() -> None:
    buf: OrderBuffer[str] = OrderBuffer(2.0)
    buf.resume("c", 5)
    buf.resume("c", 3)
    assert buf.last_presented("c") == 5
    buf.resume("c", 8)
    assert buf.last_presented("c") == 8


def test_too_many_held_skips_the_oldest_gap_at_once() -> None:
    buf: OrderBuffer[str] = OrderBuffer(60.0, max_held=2)
    buf.resume("c", 0)
    buf.feed("c", 3, 2, "m3", 0.0)
    buf.feed("c", 5, 4, "m5", 0.0)
    fed = buf.feed("c", 6, 5, "m6", 0.0)
    assert fed.status == "held"
    assert seqs(fed.out) == [("skip", 1, 2), (3, False)]
    assert buf.held() == 2


def test_forgotten_holes_make_their_seqs_late_not_duplicates() -> None:
    buf: OrderBuffer[str] = OrderBuffer(0.0, max_holes=1)
    buf.resume("c", 0)
    buf.feed("c", 2, 1, "m2", 0.0)
    buf.tick(0.0)  # hole 1..1
    buf.feed("c", 4, 3, "m4", 0.0)
    buf.tick(0.0)  # hole 3..3; hole 1..1 forgotten
    assert seqs(buf.feed("c", 1, 0, "m1", 0.0).out) == [(1, True)]
    assert seqs(buf.feed("c", 3, 2, "m3", 0.0).out) == [(3, True)]


def test_a_negative_wait_is_refused() -> None:
    with pytest.raises(ValueError):
        OrderBuffer(-1.0)


# -- properties ---------------------------------------------------------------------------------

# A conversation's messages 1..30; this user receives the seqs in ``mine`` (the others went to
# other members or were its own), each frame carrying the previous of its own as ``prev``.
# Steps: frame number k of ``mine`` arrives after dt seconds (again, for a duplicate), or a
# tick after dt seconds. Frames never fed stand for those acked by another device.
step = st.one_of(
    st.tuples(st.just("feed"), st.sampled_from("ab"), st.integers(0, 29),
              st.floats(0, 1.5, allow_nan=False)),
    st.tuples(st.just("tick"), st.just(""), st.just(0), st.floats(0, 3, allow_nan=False)),
)


@settings(max_examples=400, deadline=None)
@given(steps=st.lists(step, max_size=80), wait=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
       resume=st.booleans(),
       mine=st.fixed_dictionaries({c: st.lists(st.integers(1, 30), min_size=1, unique=True)
                                   for c in "ab"}))
def test_each_seq_once_in_order_nothing_held_past_the_bound(
        steps: list[tuple[str, str, int, float]], wait: float, resume: bool,
        mine: dict[str, list[int]]) -> None:
    frames = {c: sorted(v) for c, v in mine.items()}
    prev_of = {(c, s): (v[i - 1] if i else 0) for c, v in frames.items() for i, s in enumerate(v)}
    buf: OrderBuffer[tuple[str, int]] = OrderBuffer(wait)
    if resume:
        buf.resume("a", 0)
        buf.resume("b", 0)
    now = 0.0
    arrived: dict[tuple[str, int], float] = {}
    presented: dict[tuple[str, int], float] = {}
    in_order: dict[str, list[int]] = defaultdict(list)
    skipped: dict[str, set[int]] = defaultdict(set)

    def take(out: list[Ready[tuple[str, int]] | Skipped]) -> None:
        for o in out:
            if isinstance(o, Skipped):
                assert o.first <= o.last
                gone = set(range(o.first, o.last + 1))
                # A gap is skipped only for a message not fed (yet), never one that is held.
                assert not any(buf.is_held(o.conversation, s) for s in gone)
                assert not any((o.conversation, s) in arrived and (o.conversation, s)
                               not in presented for s in gone)
                skipped[o.conversation] |= gone
                continue
            key = (o.conversation, o.seq)
            assert o.item == key
            assert key not in presented, f"{key} presented twice"
            presented[key] = now
            if o.late:
                assert in_order[o.conversation] and o.seq < max(in_order[o.conversation])
            else:
                assert not in_order[o.conversation] or o.seq > in_order[o.conversation][-1]
                in_order[o.conversation].append(o.seq)

    for kind, conv, k, dt in steps:
        # The caller's loop: it wakes at each deadline before time moves past it.
        target = now + dt
        while (d := buf.next_deadline()) is not None and d <= target:
            now = max(now, d)
            take(buf.tick(now))
        now = target
        if kind == "tick":
            take(buf.tick(now))
            continue
        seq = frames[conv][k % len(frames[conv])]
        fed = buf.feed(conv, seq, prev_of[(conv, seq)], (conv, seq), now)
        take(fed.out)
        if (conv, seq) in arrived:
            assert fed.status == "duplicate"
        else:
            arrived[(conv, seq)] = now
            assert fed.status != "duplicate"
    while (d := buf.next_deadline()) is not None:
        now = max(now, d)
        take(buf.tick(now))

    # Nothing lost, nothing held past its bound.
    assert set(presented) == set(arrived)
    for key, t in presented.items():
        assert t - arrived[key] <= wait + 1e-9
    for conv, order in in_order.items():
        # In order, a frame is shown only after its prev, unless that prev's gap was skipped.
        for a, b in pairwise(order):
            assert prev_of[(conv, b)] <= a or prev_of[(conv, b)] in skipped[conv]
        # A late frame is one whose seq had been skipped, or one before the conversation's start.
        for (c, s) in presented:
            if c == conv and s not in order:
                assert s in skipped[conv] or s < order[0]


@settings(max_examples=200, deadline=None)
@given(perm=st.permutations(list(range(1, 21))),
       mine=st.sets(st.integers(1, 20), min_size=1))
def test_every_frame_arriving_within_the_bound_comes_out_in_order(
        perm: list[int], mine: set[int]) -> None:
    frames = sorted(mine)
    prev_of = {s: (frames[i - 1] if i else 0) for i, s in enumerate(frames)}
    buf: OrderBuffer[int] = OrderBuffer(2.0)
    buf.resume("c", 0)
    out: list[Ready[int] | Skipped] = []
    for i, seq in enumerate(s for s in perm if s in mine):
        out += buf.feed("c", seq, prev_of[seq], seq, i * 0.05).out
    assert seqs(out) == [(s, False) for s in frames]
    assert buf.held() == 0
