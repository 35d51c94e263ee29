"""The worker's batch limit, changeable at run time (``send_batch_limit`` remote control), and
the batcher's flushes: a lone task at once, the tasks of one broker fetch together."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from delivery.send_batching import LIMIT, BatchLimit, SendBatcher


def test_the_configured_limit_holds_until_overridden() -> None:
    limit = BatchLimit()
    assert limit.effective(64) == 64
    limit.set(4)
    assert limit.effective(64) == 4


def test_none_goes_back_to_the_configured_limit() -> None:
    limit = BatchLimit()
    limit.set(4)
    limit.set(None)
    assert limit.effective(64) == 64


def test_a_limit_below_one_is_refused_and_changes_nothing() -> None:
    limit = BatchLimit()
    limit.set(8)
    with pytest.raises(ValueError, match=">= 1"):
        limit.set(0)
    assert limit.effective(64) == 8


class HeldPool:
    """Celery's pool seen by the batcher (``apply_async`` with a callback): runs nothing until
    told, so a test sees which batches were started."""

    def __init__(self) -> None:
        self.started: list[list[Any]] = []
        self._pending: list[tuple[Callable[..., Any], tuple[Any, ...], Callable[[Any], None]]] = []

    def apply_async(self, fn: Callable[..., Any], args: tuple[Any, ...],
                    callback: Callable[[Any], None]) -> None:
        self.started.append(list(args[0]))
        self._pending.append((fn, args, callback))

    def finish_all(self) -> None:
        while self._pending:
            fn, args, callback = self._pending.pop(0)
            callback(fn(*args))


class Req:
    def __init__(self, n: int) -> None:
        self.n = n
        self.succeeded = False

    def on_success(self, _: object) -> None:
        self.succeeded = True


def batcher(pool: HeldPool, arriving: list[bool], max_inflight: int = 1) -> SendBatcher:
    return SendBatcher(pool, lambda reqs: (list(reqs), []), lambda req: None, max_batch=64,
                       max_inflight=max_inflight, arriving=lambda: arriving[0])


def test_the_tasks_of_one_fetch_go_as_one_batch_once_it_has_handed_them_over() -> None:
    pool, arriving = HeldPool(), [True]
    b = batcher(pool, arriving)
    reqs = [Req(i) for i in range(3)]
    for r in reqs:
        b.add(r)
    assert pool.started == []  # the fetch is still handing them over
    arriving[0] = False
    b.flush()  # the fetch's end
    assert pool.started == [reqs]
    pool.finish_all()
    assert all(r.succeeded for r in reqs)


def test_a_lone_task_outside_a_fetch_goes_at_once() -> None:
    pool, arriving = HeldPool(), [False]
    b = batcher(pool, arriving)
    first = Req(0)
    b.add(first)
    assert pool.started == [[first]]


def test_free_batch_slots_are_all_used_when_a_fetch_ends() -> None:
    pool, arriving = HeldPool(), [True]
    LIMIT.set(2)
    try:
        b = batcher(pool, arriving, max_inflight=2)
        reqs = [Req(i) for i in range(5)]
        for r in reqs:
            b.add(r)
        arriving[0] = False
        b.flush()
        assert pool.started == [reqs[:2], reqs[2:4]]  # two slots, two batches; one waits
        pool.finish_all()  # each batch's end starts what waits
        assert pool.started[-1] == reqs[4:]
        pool.finish_all()
        assert all(r.succeeded for r in reqs)
    finally:
        LIMIT.set(None)
