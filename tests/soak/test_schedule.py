"""The nemesis plan (pure)."""

from __future__ import annotations

import pytest

from bench.soak import schedule


def test_fast_on_redis_drops_the_rabbitmq_only_fault() -> None:
    kinds = schedule.parse_faults("fast", broker="redis")
    assert "broker_restart" not in kinds and "db_outage" in kinds
    assert "broker_restart" in schedule.parse_faults("fast", broker="rabbitmq")


def test_a_list_keeps_its_order_without_duplicates() -> None:
    assert schedule.parse_faults("kill_fcm, db_outage,kill_fcm", broker="redis") == [
        "kill_fcm", "db_outage"]


def test_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        schedule.parse_faults("meteor", broker="redis")


def test_plan_runs_each_kind_once_per_round() -> None:
    steps = schedule.plan(["db_outage", "pause_worker"], rounds=3, quiet_s=2.0, seed=7)
    assert [s.index for s in steps] == list(range(6))
    for r in range(3):
        assert sorted(s.kind for s in steps[2 * r:2 * r + 2]) == ["db_outage", "pause_worker"]
    assert {s.hold_s for s in steps if s.kind == "pause_worker"} == {15.0}
    assert schedule.plan(["db_outage", "pause_worker"], rounds=3, quiet_s=2.0, seed=7) == steps


def test_duration_counts_holds_quiet_and_restarts() -> None:
    steps = schedule.plan(["db_outage"], rounds=2, quiet_s=4.0)
    assert schedule.duration(steps, warmup_s=5.0, action_s=1.0) == 5.0 + 2 * (3.0 + 4.0 + 1.0)
