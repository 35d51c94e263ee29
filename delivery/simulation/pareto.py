"""``--pareto``: candidate push rules against each other, unnecessary pushes vs latency p99.

A rule is a point of the policy's knobs that decide when a user who looks offline is pushed:
the offline grace (wait before pushing a new message), the reconnect window (after a nack, keep
re-checking presence this long) and whether the user's last gateway is asked first. Each rule
runs on the same scenario and seed; the front keeps the rules that no other rule beats on both
unnecessary pushes and p99 (loss must be 0 for a rule to count at all).
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .engine import Simulation
from .params import Params

__all__ = ["Rule", "RulePoint", "pareto_front", "sweep_rules"]

GRACES_S = (0.0, 0.05, 0.1, 0.15, 0.25)
WINDOWS_S = (0.5, 1.0)


@dataclass(frozen=True)
class Rule:
    offline_grace_s: float
    reconnect_window_s: float
    probe_last_node: bool

    def label(self) -> str:
        probe = "probe" if self.probe_last_node else "no probe"
        return (f"grace {self.offline_grace_s * 1000:.0f} ms, window "
                f"{self.reconnect_window_s * 1000:.0f} ms, {probe}")


@dataclass(frozen=True)
class RulePoint:
    rule: Rule
    messages: int
    unnecessary_pushes: int
    pushed: int
    lost: int
    p50_ms: float
    p99_ms: float

    @property
    def unnecessary_pct(self) -> float:
        return 100.0 * self.unnecessary_pushes / self.messages if self.messages else 0.0


def rules(graces: Sequence[float] = GRACES_S, windows: Sequence[float] = WINDOWS_S,
          probes: Sequence[bool] = (False, True)) -> list[Rule]:
    return [Rule(g, w, p) for p, w, g in itertools.product(probes, windows, graces)]


def sweep_rules(params: Params, candidates: Iterable[Rule], quiet: bool = True) -> list[RulePoint]:
    out: list[RulePoint] = []
    for rule in candidates:
        p = dataclasses.replace(params, offline_grace_s=rule.offline_grace_s,
                                reconnect_window_s=rule.reconnect_window_s,
                                probe_last_node=rule.probe_last_node)
        s = Simulation(p).run()["strategies"]["pipeline"]
        pt = RulePoint(rule, s["messages"], s["unnecessary_pushes"], s["pushed"], s["lost"],
                       s["latency_ms"]["p50"], s["latency_ms"]["p99"])
        out.append(pt)
        if not quiet:
            sys.stderr.write(f"{rule.label():<40} unnecessary {pt.unnecessary_pushes:>6} "
                             f"p99 {pt.p99_ms:8.1f} ms lost {pt.lost}\n")
    return out


def pareto_front(points: Sequence[RulePoint]) -> list[RulePoint]:
    """Loss-free points not dominated on (unnecessary pushes, p99), by unnecessary pushes."""
    ok = [p for p in points if p.lost == 0]
    front = [p for p in ok if not any(
        (q.unnecessary_pushes <= p.unnecessary_pushes and q.p99_ms <= p.p99_ms)
        and (q.unnecessary_pushes < p.unnecessary_pushes or q.p99_ms < p.p99_ms) for q in ok)]
    return sorted(front, key=lambda p: (p.unnecessary_pushes, p.p99_ms))


def format_points(points: Sequence[RulePoint], front: Sequence[RulePoint]) -> str:
    on_front = {p.rule for p in front}
    lines = [f"{'rule':<42}{'unnecessary':>12}{'%':>8}{'pushed':>8}{'p50 ms':>9}"
             f"{'p99 ms':>9}{'lost':>6}  front"]
    for p in sorted(points, key=lambda p: (p.unnecessary_pushes, p.p99_ms)):
        lines.append(f"{p.rule.label():<42}{p.unnecessary_pushes:>12}{p.unnecessary_pct:>8.3f}"
                     f"{p.pushed:>8}{p.p50_ms:>9.1f}{p.p99_ms:>9.1f}{p.lost:>6}  "
                     f"{'*' if p.rule in on_front else ''}")
    return "\n".join(lines)
