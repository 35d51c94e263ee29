"""Version-vector helpers (pure).

A *clock* maps a replica id ``(name, incarnation)`` to the highest event counter
("dot") of that replica that has been seen contiguously. Because every presence
entry is only ever written by the replica that owns it, and because a replica
refuses deltas that leave a hole (see :mod:`presence.state`), a clock is the whole
causal context: there is never a "cloud" of out-of-order dots to keep.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

R = TypeVar("R")

__all__ = [
    "append_clock",
    "clockset_replicas",
    "dominates",
    "dominates_or_equal",
    "filter_replicas",
    "lowerbound",
    "replicas",
    "upperbound",
]


def dominates(c1: Mapping[R, int], c2: Mapping[R, int]) -> bool:
    """True if ``c1`` has seen everything ``c2`` has (for every replica of c2)."""
    return all(c1.get(r, 0) >= n for r, n in c2.items())


def dominates_or_equal(c1: Mapping[R, int], c2: Mapping[R, int]) -> bool:
    """True if ``c1`` is at least ``c2`` on the replicas that ``c1`` names.

    An empty ``c1`` dominates only an empty ``c2``.
    """
    if not c1:
        return not c2
    return all(n >= c2.get(r, 0) for r, n in c1.items())


def upperbound(c1: Mapping[R, int], c2: Mapping[R, int]) -> dict[R, int]:
    out = dict(c1)
    for r, n in c2.items():
        if n > out.get(r, -1):
            out[r] = n
    return out


def lowerbound(c1: Mapping[R, int], c2: Mapping[R, int]) -> dict[R, int]:
    out = dict(c1)
    for r, n in c2.items():
        cur = out.get(r)
        if cur is None or n < cur:
            out[r] = n
    return out


def filter_replicas(c: Mapping[R, int], keep: Iterable[R]) -> dict[R, int]:
    return {r: c[r] for r in keep if r in c}


def replicas(c: Mapping[R, int]) -> list[R]:
    return list(c)


def clockset_replicas(clockset: Iterable[tuple[R, Mapping[R, int]]]) -> list[R]:
    return [node for node, _ in clockset]


def append_clock(
    clockset: list[tuple[R, Mapping[R, int]]], clock: tuple[R, Mapping[R, int]]
) -> list[tuple[R, Mapping[R, int]]]:
    """Add ``clock`` to a set of clocks, keeping only clocks that add information.

    If the union of the set already covers ``clock`` the set is unchanged; if
    ``clock`` covers the union it replaces the set; otherwise the members that
    ``clock`` dominates are dropped and ``clock`` joins the set. Used to pick
    the fewest peers whose state together covers everything heard.
    """
    node, ctx = clock
    if not ctx:
        return clockset
    big: dict[R, int] = {}
    for _, other in clockset:
        big = upperbound(big, other)
    if dominates(ctx, big):
        return [(node, ctx)]
    if dominates(big, ctx):
        return clockset
    out: list[tuple[R, Mapping[R, int]]] = []
    insert = False
    for other_node, other in clockset:
        if dominates(ctx, other):
            insert = True
            continue
        out.append((other_node, other))
        insert = insert or not dominates(other, ctx)
    if insert:
        out.append((node, ctx))
    return out
