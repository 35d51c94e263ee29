"""Percentiles for reports (demo, simulation, benchmarks, soak): one copy of each convention.

Three conventions are in use and kept apart so no report's figures change: ``nearest_rank``
(the demo and the simulation), ``percentile`` (the benchmarks) and ``textbook_rank`` (the
soak). Medians are the standard library's (``statistics.median``, ``median_high``).
"""

from __future__ import annotations

import math
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


def textbook_rank(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank percentile as textbooks define it: the value at 1-based rank
    ``ceil(p / 100 * n)`` of the sorted values (``p`` in [0, 100]); None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]
