"""The demo's report: one section a function, the exit status from the result."""

from __future__ import annotations

from dataclasses import replace

import pytest

from workers.demo import report as r
from workers.demo.result import Result

RESULT = Result(
    messages=10, delivered_ws=7, pushed=2, pending=1, expired=0, in_flight_at_end=0,
    replayed_in_final_phase=3, lost=0, lost_ids=[], duplicate_frames=1, duplicate_outcomes=0,
    duplicate_pushes=0, forced_races=2, reconnects=1, final_states={"delivered": 10},
    latency_ms={"p50": 5.0, "p99": 9.0, "max": 9.5}, elapsed_s=1.5)


def test_the_report_has_every_section_in_order() -> None:
    text = r.report(RESULT, "embedded")
    lines = text.splitlines()
    assert lines[0] == "delivery demo — embedded"
    assert lines[1:] == [line for section in r.SECTIONS for line in section(RESULT)]
    assert "LOST                        0" in text and "p99 9.0 ms" in text


def test_a_new_section_joins_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(r, "SECTIONS", [*r.SECTIONS, lambda res: [f"  extra {res.messages}"]])
    assert r.report(RESULT, "x").splitlines()[-1] == "  extra 10"


def test_passed_only_without_loss_or_double_outcome() -> None:
    assert RESULT.passed
    assert not replace(RESULT, lost=1).passed
    assert not replace(RESULT, duplicate_outcomes=1).passed
    assert not replace(RESULT, duplicate_pushes=1).passed
    assert RESULT.to_json()["latency_ms"] == {"p50": 5.0, "p99": 9.0, "max": 9.5}
