"""The verdict, pure: from what the producer was given, what clients showed and what the store
holds at the end, derive lost / shown twice / not final and the recovery time of each fault.

Times are seconds on one monotonic clock of the soak process.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from delivery.stats import textbook_rank
from delivery.vocabulary import State

FINAL_CONNECTED = frozenset({State.DELIVERED})
# A user with no live connection at the end may be owed the message by replay or push.
FINAL_OFFLINE = frozenset({State.DELIVERED, State.PUSHED, State.PENDING})
DETAIL_LIMIT = 20
# A message given this long before a fault began was most likely still in flight when it hit.
IN_FLIGHT_S = 1.0


@dataclass(frozen=True)
class Given:
    user: str
    t: float


@dataclass(frozen=True)
class Shown:
    msg_id: str
    user: str
    t: float
    instance: int  # which client object (a restarted client is a new instance)


@dataclass(frozen=True)
class Window:
    index: int
    kind: str
    start: float
    end: float
    skipped: str = ""  # why the fault did not run (the machine does not allow it)


@dataclass
class FaultResult:
    index: int
    kind: str
    skipped: str
    affected: int = 0
    # From the fault's end until all sent before it was shown; None if anything was lost.
    recovery_s: float | None = None
    late: int = 0
    lost: list[dict[str, Any]] = field(default_factory=list)
    lost_count: int = 0


@dataclass
class Verdict:
    messages: int
    lost: list[dict[str, Any]]
    shown_twice: list[dict[str, Any]]
    not_final: list[dict[str, Any]]
    faults: list[FaultResult]
    states: dict[str, int]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.shown_twice or self.not_final)


def _owner(t: float, windows: Sequence[Window]) -> Window | None:
    """The fault during or after which (and before the next one) ``t`` falls, counting a
    message given just before a fault as the fault's."""
    owner = None
    for w in windows:
        if w.start <= t + IN_FLIGHT_S:
            owner = w
    return owner


def check(
    given: Mapping[str, Given],
    shown: Sequence[Shown],
    states: Mapping[str, str | None],
    connected_at_end: frozenset[str],
    windows: Sequence[Window],
    *,
    bound_s: float,
) -> Verdict:
    first: dict[str, float] = {}
    shows: dict[str, list[Shown]] = defaultdict(list)
    for s in shown:
        if s.msg_id in given and given[s.msg_id].user == s.user:
            shows[s.msg_id].append(s)
            first[s.msg_id] = min(first.get(s.msg_id, s.t), s.t)

    lost: list[dict[str, Any]] = []
    not_final: list[dict[str, Any]] = []
    twice: list[dict[str, Any]] = []
    by_state: dict[str, int] = defaultdict(int)
    lost_by_window: dict[int, list[dict[str, Any]]] = defaultdict(list)
    owned_by_window: dict[int, list[str]] = defaultdict(list)
    for msg_id, g in given.items():
        state = states.get(msg_id)
        by_state[state or "not stored"] += 1
        online = g.user in connected_at_end
        owner = _owner(g.t, windows)
        owned_by_window[owner.index if owner else -1].append(msg_id)
        entry = {"id": msg_id, "user": g.user, "state": state or "not stored",
                 "given_at_s": round(g.t, 3),
                 "fault": f"{owner.index}:{owner.kind}" if owner else "before faults"}
        if msg_id not in first and (online or state not in FINAL_OFFLINE):
            lost.append(entry)
            lost_by_window[owner.index if owner else -1].append(entry)
        if state not in (FINAL_CONNECTED if online else FINAL_OFFLINE):
            not_final.append(entry)
        if len(shows[msg_id]) > 1:
            instances = {s.instance for s in shows[msg_id]}
            twice.append({**entry, "times": len(shows[msg_id]),
                          "across_client_restarts": len(instances) > 1})

    results: list[FaultResult] = []
    prev_end = -math.inf
    for w in windows:
        r = FaultResult(w.index, w.kind, w.skipped)
        owned = lost_by_window.get(w.index, [])
        r.lost_count = len(owned)
        r.lost = owned[:DETAIL_LIMIT]
        if not w.skipped:
            # Everything sent up to the fault's end that was not shown when it began.
            affected = [m for m, g in given.items() if prev_end < g.t <= w.end
                        and (m not in first or first[m] > w.start)]
            r.affected = len(affected)
            if not owned and all(m in first for m in affected):
                r.recovery_s = max([first[m] - w.end for m in affected] + [0.0])
            r.late = sum(1 for m in set(affected) | set(owned_by_window[w.index]) if m in first
                         and first[m] - max(w.end, given[m].t) > bound_s)
            prev_end = w.end
        results.append(r)
    return Verdict(len(given), lost, twice, not_final, results, dict(by_state))


def recovery_by_kind(faults: Sequence[FaultResult]) -> dict[str, dict[str, Any]]:
    """Per fault kind: how many ran, how many were skipped, recovery p50/p99/max, lost."""
    out: dict[str, dict[str, Any]] = {}
    for kind in dict.fromkeys(f.kind for f in faults):
        mine = [f for f in faults if f.kind == kind]
        ran = [f for f in mine if not f.skipped]
        times = [f.recovery_s for f in ran if f.recovery_s is not None]

        def r3(v: float | None) -> float | None:
            return None if v is None else round(v, 3)

        out[kind] = {
            "count": len(ran),
            "skipped": len(mine) - len(ran),
            "skip_reason": next((f.skipped for f in mine if f.skipped), ""),
            "lost": sum(f.lost_count for f in mine),
            "unrecovered": sum(1 for f in ran if f.recovery_s is None),
            "late": sum(f.late for f in ran),
            "recovery_s": {"p50": r3(textbook_rank(times, 50)),
                           "p99": r3(textbook_rank(times, 99)),
                           "max": r3(max(times) if times else None)},
        }
    return out
