"""The rate budget's verdicts, without sockets: one named test per verdict."""

from __future__ import annotations

from delivery.gateway.guard import RateBudget, Verdict


def spent(flood_strikes: int = 3) -> RateBudget:
    """A budget of one frame, already spent at t=0."""
    b = RateBudget(rate_per_s=1, burst=1, now=0.0, flood_strikes=flood_strikes)
    assert b.admit(0.0, warn=True) is Verdict.PASS
    return b


def test_a_frame_in_budget_passes() -> None:
    assert RateBudget(1, 1, 0.0).admit(0.0, warn=True) is Verdict.PASS


def test_the_first_data_frame_over_budget_warns_once() -> None:
    b = spent()
    assert b.admit(0.0, warn=True) is Verdict.WARN
    assert b.admit(0.0, warn=True) is Verdict.DROP


def test_a_control_frame_over_budget_is_dropped_without_a_warning() -> None:
    b = spent()
    assert b.admit(0.0, warn=False) is Verdict.DROP
    assert b.admit(0.0, warn=True) is Verdict.WARN  # the data frame still carries it


def test_flood_strikes_in_a_row_close() -> None:
    b = spent(flood_strikes=3)
    verdicts = [b.admit(0.0, warn=False) for _ in range(3)]
    assert verdicts == [Verdict.DROP, Verdict.DROP, Verdict.CLOSE]


def test_a_full_bucket_forgives_strikes_and_rearms_the_warning() -> None:
    b = spent()
    b.admit(0.0, warn=True)
    b.admit(0.0, warn=True)
    assert b.admit(5.0, warn=True) is Verdict.PASS and b.strikes == 0
    assert b.admit(5.0, warn=True) is Verdict.WARN
