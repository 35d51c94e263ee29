"""The ack-batching core, without a loop or a store: one named test per decision."""

from __future__ import annotations

from delivery.gateway.ack_batcher import AckBatcher, AckStep, Retry


def batcher(batch_max: int = 3, max_flushes: int = 2, max_pending: int = 10,
            retry_max_s: float = 1.0) -> AckBatcher[int]:
    return AckBatcher(batch_s=0.005, batch_max=batch_max, max_flushes=max_flushes,
                      max_pending=max_pending, retry_max_s=retry_max_s)


def test_the_first_ack_opens_the_batch_window() -> None:
    b = batcher()
    assert b.add(1) is AckStep.ARM
    assert b.timer


def test_acks_inside_the_window_wait_for_it() -> None:
    b = batcher()
    b.add(1)
    assert [b.add(2), b.add(3), b.add(4)] == [AckStep.WAIT] * 3  # even past a full batch


def test_the_window_closing_starts_batches_up_to_the_concurrency() -> None:
    b = batcher(batch_max=2, max_flushes=2)
    for i in range(7):
        b.add(i)
    assert b.start() == [[0, 1], [2, 3]]
    assert b.running == 2 and b.pending == [4, 5, 6] and not b.timer


def test_a_partial_batch_starts_when_nothing_runs() -> None:
    b = batcher()
    b.add(1)
    assert b.start() == [[1]]


def test_with_a_flush_running_a_partial_batch_waits() -> None:
    b = batcher(batch_max=3)
    b.add(1)
    b.start()
    assert b.add(2) is AckStep.WAIT
    assert b.start() == []  # only full batches join a running flush


def test_with_a_flush_running_a_full_batch_starts_at_once() -> None:
    b = batcher(batch_max=2)
    b.add(1)
    b.start()
    b.add(2)
    assert b.add(3) is AckStep.FLUSH
    assert b.start() == [[2, 3]]


def test_a_full_batch_waits_when_the_concurrency_is_used() -> None:
    b = batcher(batch_max=1, max_flushes=1)
    b.add(1)
    b.start()
    assert b.add(2) is AckStep.FLUSH
    assert b.start() == []  # the one flush allowed (SQLite) is running


def test_acks_that_waited_for_a_flush_start_when_it_finishes() -> None:
    b = batcher(batch_max=3)
    b.add(1)
    b.start()
    b.add(2)
    b.recorded()
    assert b.finished() == [[2]]  # no further window


def test_a_finished_flush_with_nothing_waiting_starts_nothing() -> None:
    b = batcher()
    b.add(1)
    b.start()
    b.recorded()
    assert b.finished() == [] and b.running == 0


def test_a_failed_batch_goes_back_to_the_front_and_retries_after_a_backoff() -> None:
    b = batcher()
    b.add(1)
    (batch,) = b.start()
    b.add(2)
    assert b.failed(batch) == Retry(0.1, 0)
    assert b.pending == [1, 2] and b.timer
    assert b.finished() == []  # the retry timer starts them, not the finished flush


def test_the_backoff_doubles_up_to_its_maximum_and_resets_on_success() -> None:
    b = batcher(retry_max_s=0.5)
    b.add(1)
    delays = []
    for _ in range(5):
        (batch,) = b.start()
        delays.append(b.failed(batch).delay)
        b.finished()
    assert delays == [0.1, 0.2, 0.4, 0.5, 0.5]
    (batch,) = b.start()
    b.recorded()
    assert b.retry_s == 0.0


def test_past_max_pending_the_oldest_acks_are_dropped() -> None:
    b = batcher(batch_max=3, max_pending=4)
    for i in range(3):
        b.add(i)
    (batch,) = b.start()
    for i in range(3, 6):
        b.add(i)
    assert b.failed(batch).dropped == 2
    assert b.pending == [2, 3, 4, 5]
