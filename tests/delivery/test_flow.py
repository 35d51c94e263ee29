"""Producer flow control's decisions (delivery/flow.py), one test per branch, and the shell's
gate (delivery/flow_gate.py) driven by a depth reader and a clock of the test's own."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery.configs import flow_config
from delivery.flow import (
    ADMIT,
    DEFAULT_RETRY_AFTER_S,
    FAILURE_BACKOFF_S,
    MAX_RETRY_AFTER_S,
    MIN_RETRY_AFTER_S,
    REFRESH,
    FlowConfig,
    Reading,
    Refuse,
    admitted,
    decide,
    decide_after_refresh,
    observe,
    observe_failure,
    retry_after,
    retry_after_header,
)
from delivery.flow_gate import Gate
from delivery.settings import Settings, SettingsError

ON = FlowConfig(max_backlog=100, refresh_s=0.005)


# -- decide -----------------------------------------------------------------------------------


def test_off_admits_without_a_reading() -> None:
    assert decide(FlowConfig(max_backlog=0), None, 5.0) is ADMIT


def test_no_reading_asks_for_one() -> None:
    assert decide(ON, None, 5.0) is REFRESH


def test_a_stale_reading_asks_for_a_fresh_one() -> None:
    assert decide(ON, Reading(0, at=1.0), 1.0 + ON.refresh_s + 1e-6) is REFRESH


def test_a_reading_from_the_future_asks_for_a_fresh_one() -> None:
    # The monotonic clock never goes back; a reading stamped later is someone else's mistake.
    assert decide(ON, Reading(0, at=2.0), 1.0) is REFRESH


def test_a_fresh_reading_under_the_bound_admits() -> None:
    assert decide(ON, Reading(99, at=1.0), 1.0 + ON.refresh_s) is ADMIT


def test_a_fresh_reading_at_the_bound_refuses() -> None:
    d = decide(ON, Reading(100, at=1.0), 1.001)
    assert isinstance(d, Refuse)
    assert (d.backlog, d.bound, d.retry_after_s) == (100, 100, DEFAULT_RETRY_AFTER_S)


def test_sends_admitted_since_the_reading_count_towards_the_bound() -> None:
    r = Reading(98, at=1.0)
    assert decide(ON, r, 1.001) is ADMIT
    r = admitted(admitted(r))
    assert r.projected == 100
    assert isinstance(decide(ON, r, 1.001), Refuse)


def test_after_a_failed_read_sends_are_admitted_for_the_backoff() -> None:
    r = observe_failure(None, 1.0)
    assert decide(ON, r, 1.0 + FAILURE_BACKOFF_S) is ADMIT


def test_after_the_failure_backoff_the_depth_is_read_again() -> None:
    r = observe_failure(None, 1.0)
    assert decide(ON, r, 1.0 + FAILURE_BACKOFF_S + 1e-6) is REFRESH


def test_decide_after_refresh_never_asks_again() -> None:
    assert decide_after_refresh(FlowConfig(max_backlog=10, refresh_s=0.0), Reading(3, 7.0)) is ADMIT
    assert isinstance(decide_after_refresh(ON, Reading(500, 7.0)), Refuse)


@given(depth=st.integers(0, 10_000), added=st.integers(0, 1000), bound=st.integers(1, 5000),
       age=st.floats(0, 0.004))
def test_a_fresh_reading_admits_exactly_below_the_bound(depth: int, added: int, bound: int,
                                                        age: float) -> None:
    config = FlowConfig(max_backlog=bound, refresh_s=0.005)
    d = decide(config, Reading(depth, at=10.0, added=added), 10.0 + age)
    assert (d is ADMIT) == (depth + added < bound)
    assert d is ADMIT or isinstance(d, Refuse)


# -- observe: the drain rate ----------------------------------------------------------------


def test_the_first_reading_knows_no_drain_rate() -> None:
    assert observe(None, 40, 1.0) == Reading(40, 1.0)


def test_the_drain_rate_counts_this_process_sends_since_the_last_reading() -> None:
    prev = Reading(100, at=1.0, added=50)  # 150 as this process knew it
    r = observe(prev, 50, 1.5)  # 100 left the queue in 0.5 s
    assert r.drain_per_s == pytest.approx(200.0)
    assert (r.depth, r.added) == (50, 0)


def test_the_drain_rate_is_a_moving_average() -> None:
    r = observe(Reading(100, 1.0, drain_per_s=100.0), 0, 1.5)  # a sample of 200/s
    assert r.drain_per_s == pytest.approx(0.7 * 100 + 0.3 * 200)


def test_a_growing_queue_samples_a_zero_drain() -> None:
    r = observe(Reading(10, 1.0, drain_per_s=100.0), 30, 2.0)
    assert r.drain_per_s == pytest.approx(70.0)


def test_an_idle_empty_queue_leaves_the_rate_alone() -> None:
    assert observe(Reading(0, 1.0, drain_per_s=80.0), 0, 2.0).drain_per_s == 80.0


def test_two_readings_at_the_same_instant_leave_the_rate_alone() -> None:
    assert observe(Reading(10, 1.0, drain_per_s=5.0), 0, 1.0).drain_per_s == 5.0


def test_a_reading_after_a_failure_starts_afresh() -> None:
    failed = observe_failure(Reading(9, 0.5, drain_per_s=3.0), 1.0)
    assert observe(failed, 7, 1.2) == Reading(7, 1.2)


def test_a_failure_keeps_the_rate_known_so_far() -> None:
    r = observe_failure(Reading(9, 0.5, drain_per_s=3.0), 1.0)
    assert (r.failed, r.depth, r.drain_per_s) == (True, 0, 3.0)


def test_a_negative_depth_is_a_bug() -> None:
    with pytest.raises(ValueError, match="depth"):
        observe(None, -1, 1.0)


# -- the retry hint ---------------------------------------------------------------------------


def test_retry_after_without_a_rate_is_the_default() -> None:
    assert retry_after(500, 100, None) == DEFAULT_RETRY_AFTER_S


def test_retry_after_when_nothing_drains_is_the_longest() -> None:
    assert retry_after(500, 100, 0.0) == MAX_RETRY_AFTER_S


def test_retry_after_is_the_time_to_half_the_bound() -> None:
    assert retry_after(250, 100, 100.0) == pytest.approx(2.0)


def test_retry_after_is_never_shorter_than_the_minimum() -> None:
    assert retry_after(100, 100, 1e6) == MIN_RETRY_AFTER_S


@given(backlog=st.integers(1, 10**7), bound=st.integers(1, 10**6),
       rate=st.one_of(st.none(), st.floats(0, 1e6)))
def test_retry_after_stays_within_its_bounds(backlog: int, bound: int, rate: float | None) -> None:
    assert MIN_RETRY_AFTER_S <= retry_after(backlog, bound, rate) <= MAX_RETRY_AFTER_S


def test_the_retry_after_header_is_whole_seconds_at_least_one() -> None:
    assert [retry_after_header(s) for s in (0.1, 1.0, 1.2, 29.5)] == ["1", "1", "2", "30"]


# -- config -----------------------------------------------------------------------------------


def test_config_rejects_a_negative_bound() -> None:
    with pytest.raises(ValueError, match="max_backlog"):
        FlowConfig(max_backlog=-1)


def test_config_rejects_a_non_finite_refresh() -> None:
    with pytest.raises(ValueError, match="refresh_s"):
        FlowConfig(max_backlog=1, refresh_s=float("inf"))


def test_settings_give_the_config_and_default_to_off() -> None:
    assert not flow_config(Settings()).enabled
    cfg = flow_config(Settings.from_env({"DELIVERY_MAX_BACKLOG": "500",
                                         "DELIVERY_BACKLOG_REFRESH_MS": "2"}))
    assert cfg == FlowConfig(max_backlog=500, refresh_s=0.002)


@pytest.mark.parametrize("var", ["DELIVERY_MAX_BACKLOG", "DELIVERY_BACKLOG_REFRESH_MS"])
def test_settings_refuse_a_negative_value(var: str) -> None:
    with pytest.raises(SettingsError, match=var):
        Settings.from_env({var: "-1"})


# -- the gate (the shell) with a depth reader and a clock of the test's ------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_gate_reads_once_per_refresh_period_and_counts_its_admissions() -> None:
    clock, depth = Clock(), [95]
    reads: list[float] = []

    def read() -> int:
        reads.append(clock.t)
        return depth[0]

    gate = Gate(read, clock=clock)
    verdicts = [gate.check(ON) for _ in range(10)]
    assert verdicts[:5] == [ADMIT] * 5  # 95 + 5 admitted = the bound
    assert all(isinstance(v, Refuse) for v in verdicts[5:])
    assert reads == [100.0]
    clock.t += 0.01  # stale: read again; the workers drained 50
    depth[0] = 50
    assert gate.check(ON) is ADMIT
    assert len(reads) == 2
    assert gate.reading is not None and gate.reading.drain_per_s == pytest.approx(5000.0)


def test_the_gate_admits_when_the_depth_cannot_be_read() -> None:
    clock = Clock()

    def read() -> int:
        raise ConnectionError("broker down")

    gate = Gate(read, clock=clock)
    assert gate.check(ON) is ADMIT
    assert gate.check(ON) is ADMIT
    assert gate.failures == 1  # no read per send while it is down


def test_the_gate_off_reads_nothing() -> None:
    def read() -> int:
        raise AssertionError("read while off")

    assert Gate(read).check(FlowConfig(max_backlog=0)) is ADMIT


def test_while_one_thread_reads_the_others_use_the_previous_reading() -> None:
    clock = Clock()
    entered, release = threading.Event(), threading.Event()
    calls = [0]

    def read() -> int:
        calls[0] += 1
        if calls[0] == 2:
            entered.set()
            release.wait(5)
        return 100

    gate = Gate(read, clock=clock)
    assert isinstance(gate.check(ON), Refuse)  # first reading: 100, at the bound
    clock.t += 1.0
    t = threading.Thread(target=gate.check, args=(ON,))
    t.start()
    assert entered.wait(5)
    assert isinstance(gate.check(ON), Refuse)  # decided on the previous reading, no wait
    release.set()
    t.join(5)
    assert calls[0] == 2
