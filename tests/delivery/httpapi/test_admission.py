"""Overload: at most ``limit`` sends in flight; the next is refused, not queued."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery.httpapi.admission import Admission


def test_refuses_beyond_the_limit_and_admits_after_a_leave() -> None:
    a = Admission(2)
    assert a.enter() and a.enter()
    assert not a.enter() and a.refused == 1
    a.leave()
    assert a.enter() and a.in_flight == 2


def test_leave_without_enter_and_bad_limit() -> None:
    with pytest.raises(RuntimeError):
        Admission(1).leave()
    with pytest.raises(ValueError):
        Admission(0)


@given(st.integers(1, 5), st.lists(st.booleans(), max_size=60))
def test_in_flight_never_exceeds_the_limit(limit: int, ops: list[bool]) -> None:
    a, held = Admission(limit), 0
    for enter in ops:
        if enter:
            if a.enter():
                held += 1
        elif held:
            a.leave()
            held -= 1
        assert a.in_flight == held <= limit
