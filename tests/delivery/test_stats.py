"""The three percentile conventions, each with the figures its reports rely on."""

from __future__ import annotations

from delivery.stats import nearest_rank, percentile, textbook_rank


def test_percentile_rounds_to_the_nearest_index() -> None:
    values = [float(v) for v in range(1, 1001)]
    assert percentile(values, 50) in (500.0, 501.0)
    assert percentile(values, 99.9) >= 999.0
    assert percentile([], 50) != percentile([], 50)  # NaN


def test_nearest_rank_takes_the_floor_index_of_sorted_values() -> None:
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 0.5) == 3.0
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 1.0) == 4.0


def test_textbook_rank() -> None:
    assert textbook_rank([], 50) is None
    assert textbook_rank([3.0, 1.0, 2.0], 50) == 2.0
    assert textbook_rank([float(i) for i in range(1, 101)], 99) == 99.0
