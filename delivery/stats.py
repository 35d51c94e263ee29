"""Percentiles for reports (demo, simulation, benchmarks): one copy of each convention.

Two conventions are in use and kept apart so no report's figures change: ``nearest_rank``
(the demo and the simulation) and ``percentile`` (the benchmarks).
"""

from __future__ import annotations

from collections.abc import Sequence


def nearest_rank(ascending: Sequence[float], q: float) -> float:
    """The value at rank ``floor(q * n)`` of a non-empty ascending sequence; ``q`` in [0, 1]."""
    return ascending[min(len(ascending) - 1, int(q * len(ascending)))]


def percentile(values: Sequence[float], q: float) -> float:
    """The value nearest to the ``q``-th percentile (``q`` in [0, 100]) of unsorted values,
    without interpolation; NaN when there are none."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100.0 * (len(s) - 1))))
    return s[k]
