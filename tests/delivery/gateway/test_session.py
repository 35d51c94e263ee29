"""The per-connection session core, without sockets: one named test per decision, and a property
test of the window invariants."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from delivery.gateway.session import (
    LiveFrame,
    Offer,
    ReplayCursor,
    ReplayNext,
    ReplayRow,
    Session,
)

NOW = 100.0


def session(max_in_flight: int = 2, max_queued: int = 3, recent_acked: int = 4) -> Session:
    return Session(max_in_flight, max_queued, recent_acked, NOW)


def live(msg_id: str, attempt: int = 1) -> LiveFrame:
    return LiveFrame(msg_id, uuid.uuid4(), "bob", attempt, ("c1",), f"text {msg_id}")


# -- offer --------------------------------------------------------------------------------------


def test_a_new_message_is_queued() -> None:
    s = session()
    assert s.offer("m1", "t1", None) is Offer.QUEUED
    assert s.has("m1") and s.load == 1 and Offer.QUEUED.taken


def test_a_queued_message_offered_again_is_held_once() -> None:
    s = session()
    s.offer("m1", "t1", None)
    assert s.offer("m1", "t1", live("m1")) is Offer.HELD
    assert s.load == 1


def test_an_in_flight_message_offered_again_is_held() -> None:
    s = session()
    s.offer("m1", "t1", None)
    s.sent_next()
    assert s.offer("m1", "t1", None) is Offer.HELD
    assert s.sent_next() is None


def test_a_live_copy_of_a_replayed_frame_in_flight_is_remembered_for_nacks() -> None:
    s = session()
    s.offer("m1", "t1", None)
    s.sent_next()
    frame = live("m1")
    assert s.offer("m1", "t1", frame) is Offer.HELD
    assert s.in_flight["m1"] is frame
    assert s.offer("m1", "t1", live("m1", attempt=2)) is Offer.HELD
    assert s.in_flight["m1"] is frame  # the first live frame stays


def test_an_acked_message_offered_again_must_be_reacked() -> None:
    s = session()
    s.offer("m1", "t1", None)
    s.sent_next()
    s.acked("m1")
    assert s.offer("m1", "t1", live("m1")) is Offer.ACKED
    assert Offer.ACKED.taken and s.load == 0  # not sent again


def test_an_id_acked_while_still_queued_is_reacked_when_offered_again() -> None:
    s = session()
    s.offer("m1", "t1", None)
    s.acked("m1")  # the client had it from another connection
    assert s.offer("m1", "t1", None) is Offer.ACKED


def test_an_id_acked_while_in_flight_elsewhere_is_reacked_when_offered_again() -> None:
    s = session()
    s.offer("m1", "t1", None)
    s.acked("m1")
    s.sent_next()  # still sent: it was queued
    assert s.offer("m1", "t1", None) is Offer.ACKED


def test_a_live_frame_over_a_full_queue_is_dropped() -> None:
    s = session(max_in_flight=1, max_queued=1)
    s.offer("m1", "t1", live("m1"))
    assert s.offer("m2", "t2", live("m2")) is Offer.DROPPED
    assert not Offer.DROPPED.taken and s.dropped == 1 and not s.has("m2")


def test_a_replayed_frame_is_queued_past_the_queue_bound() -> None:
    # Replay reads only while the window has room, so it needs no bound of its own.
    s = session(max_in_flight=1, max_queued=1)
    s.offer("m1", "t1", live("m1"))
    assert s.offer("m2", "t2", None) is Offer.QUEUED


def test_nothing_is_offered_to_a_closed_session() -> None:
    s = session()
    s.closed()
    assert s.offer("m1", "t1", live("m1")) is Offer.CLOSED
    assert not Offer.CLOSED.taken


# -- the writer ---------------------------------------------------------------------------------


def test_the_writer_sends_in_order_up_to_the_window() -> None:
    s = session(max_in_flight=2)
    for i in range(3):
        s.offer(f"m{i}", f"t{i}", None)
    assert [s.sent_next(), s.sent_next(), s.sent_next()] == ["t0", "t1", None]
    assert s.sent == 2 and set(s.in_flight) == {"m0", "m1"}


def test_an_ack_frees_the_window_for_the_next_frame() -> None:
    s = session(max_in_flight=1)
    s.offer("m0", "t0", None)
    s.offer("m1", "t1", None)
    s.sent_next()
    assert s.acked("m0").freed
    assert s.sent_next() == "t1"


def test_the_writer_sends_nothing_once_closed() -> None:
    s = session()
    s.offer("m0", "t0", None)
    s.closed()
    assert s.sent_next() is None


# -- acks ---------------------------------------------------------------------------------------


def test_an_ack_of_a_live_frame_returns_it() -> None:
    s = session()
    frame = live("m1")
    s.offer("m1", "t1", frame)
    s.sent_next()
    assert s.acked("m1") == (True, frame)
    assert s.acked_count == 1


def test_an_ack_of_a_replayed_frame_frees_without_a_live_frame() -> None:
    s = session()
    s.offer("m1", "t1", None)
    s.sent_next()
    assert s.acked("m1") == (True, None)


def test_an_ack_of_an_id_not_in_flight_is_remembered_only() -> None:
    s = session()
    assert s.acked("other") == (False, None)
    assert "other" in s.recent and s.acked_count == 0


def test_only_the_last_recent_acked_ids_are_remembered() -> None:
    s = session(recent_acked=2)
    for i in range(3):
        s.acked(f"m{i}")
    assert list(s.recent) == ["m1", "m2"]
    assert s.offer("m0", "t0", None) is Offer.QUEUED  # forgotten: may be sent again


# -- replay -------------------------------------------------------------------------------------


def test_replay_offers_a_row_new_here() -> None:
    assert session().replay_row("m1") is ReplayRow.OFFER


def test_replay_skips_a_row_queued_or_in_flight_here() -> None:
    s = session()
    s.offer("m1", "t1", None)
    s.offer("m2", "t2", None)
    s.sent_next()
    assert s.replay_row("m1") is ReplayRow.SKIP
    assert s.replay_row("m2") is ReplayRow.SKIP


def test_replay_reacks_a_row_acked_here() -> None:
    s = session()
    s.acked("m1")
    assert s.replay_row("m1") is ReplayRow.REACK


def test_replay_reads_only_while_the_session_holds_less_than_a_window() -> None:
    s = session(max_in_flight=2)
    s.offer("m0", "t0", None)
    assert s.replay_may_read
    s.offer("m1", "t1", None)
    assert not s.replay_may_read


def test_a_full_page_reads_the_next_page() -> None:
    c = ReplayCursor(batch=2, tail_s=1.5)
    c.row(7)
    c.row(9)
    assert c.page_read(2) is ReplayNext.NEXT and c.after == 9


def test_a_short_page_waits_for_the_tail_pass_once() -> None:
    c = ReplayCursor(batch=2, tail_s=1.5)
    assert c.page_read(1) is ReplayNext.TAIL
    assert c.page_read(0) is ReplayNext.DONE


def test_without_a_tail_pass_a_short_page_ends_replay() -> None:
    assert ReplayCursor(batch=2, tail_s=0).page_read(1) is ReplayNext.DONE


# -- idle and close -----------------------------------------------------------------------------


def test_a_session_is_idle_after_idle_s_without_a_frame() -> None:
    s = session()
    s.received(NOW + 5)
    assert not s.idle(NOW + 10, 10.0)
    assert s.idle(NOW + 15.1, 10.0)
    assert not s.idle(NOW + 1e6, 0)  # no idle timeout


def test_close_returns_each_unacked_live_frame_once() -> None:
    s = session(max_in_flight=1)
    a, b = live("m1"), live("m2")
    s.offer("m1", "t1", a)
    s.offer("m0", "t0", None)  # replayed: routing does not wait for it
    s.offer("m2", "t2", b)
    s.sent_next()
    assert s.closed() == [a, b]
    assert not s.open and not s.idle(NOW + 1e6, 1.0)


# -- the window invariants ----------------------------------------------------------------------

ids = st.sampled_from([f"m{i}" for i in range(8)])
events = st.lists(st.one_of(
    st.tuples(st.just("offer"), ids, st.booleans()),
    st.tuples(st.just("ack"), ids, st.just(False)),
    st.tuples(st.just("send"), st.just(""), st.just(False)),
    st.tuples(st.just("close"), st.just(""), st.just(False)),
), max_size=80)


@settings(max_examples=300, deadline=None)
@given(events, st.integers(1, 4), st.integers(1, 4), st.integers(1, 8))
def test_window_invariants(script: list[tuple[str, str, bool]], max_in_flight: int,
                           max_queued: int, recent_acked: int) -> None:
    """Never more than ``max_in_flight`` in flight; an acked id (while remembered) is not sent
    to the socket again, beyond the one copy already queued when the ack came; every offered
    id is sent, still queued or reported (dropped, acked, closed)."""
    s = Session(max_in_flight, max_queued, recent_acked, NOW)
    sent: list[str] = []
    queued_offers = 0
    allowance: dict[str, int] = {}  # acked id -> copies it may still be sent (0 or 1)
    for kind, msg_id, is_live in script:
        if kind == "offer":
            result = s.offer(msg_id, msg_id, live(msg_id) if is_live else None)
            if result is Offer.QUEUED:
                queued_offers += 1
                assert msg_id in s.queued and msg_id not in s.recent
            elif result is Offer.HELD:
                assert msg_id in s.queued or msg_id in s.in_flight
            elif result is Offer.ACKED:
                assert msg_id in s.recent
            elif result is Offer.DROPPED:
                assert is_live and len(s.outbox) >= max_queued and msg_id not in s.queued
            else:
                assert not s.open
        elif kind == "ack":
            s.acked(msg_id)
            allowance[msg_id] = 1 if msg_id in s.queued else 0
        elif kind == "send":
            text = s.sent_next()
            if text is not None:
                sent.append(text)
                if text in allowance:
                    allowance[text] -= 1
                    assert allowance[text] >= 0, f"{text} sent again after its ack"
        else:
            s.closed()
        for forgotten in [m for m in allowance if m not in s.recent]:
            del allowance[forgotten]
        assert len(s.in_flight) <= max_in_flight
        assert len(s.queued) == len(s.outbox)
    # Each queued offer was sent or is still queued: nothing vanished.
    assert queued_offers == len(sent) + len(s.outbox)


def test_a_restart_reads_again_from_the_oldest_after_this_page() -> None:
    """An ``owed`` notice during a replay: the same pass goes back to the oldest row (a
    second pass beside it would offer later seqs ahead of earlier ones)."""
    c = ReplayCursor(batch=2, tail_s=0)
    c.row(7)
    c.restart()
    assert c.page_read(1) is ReplayNext.NEXT and c.after == 0
    assert c.page_read(1) is ReplayNext.DONE  # once


def test_a_restart_during_a_full_page_waits_for_the_page_to_end() -> None:
    c = ReplayCursor(batch=2, tail_s=0)
    c.row(9)
    c.restart()
    assert c.page_read(2) is ReplayNext.NEXT and c.after == 9
    assert c.page_read(0) is ReplayNext.NEXT and c.after == 0
