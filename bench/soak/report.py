"""The soak's output: a JSON summary, a one-screen text summary and the progress line."""

from __future__ import annotations

import sys
from typing import Any

from bench.soak.checker import Verdict, recovery_by_kind

ID_LIMIT = 50


def summary(verdict: Verdict, *, config: dict[str, Any], refused: int,
            errors: dict[str, int], duration_s: float, extra: dict[str, Any]) -> dict[str, Any]:
    kinds = recovery_by_kind(verdict.faults)
    return {
        "ok": verdict.ok,
        "config": config,
        "messages": verdict.messages,
        "refused": refused,
        "refused_by_error": errors,
        "faults": {k: v["count"] for k, v in kinds.items()},
        "lost": len(verdict.lost),
        "shown_twice": len(verdict.shown_twice),
        "shown_twice_across_client_restarts": sum(
            1 for d in verdict.shown_twice if d["across_client_restarts"]),
        "not_final": len(verdict.not_final),
        "late": sum(k["late"] for k in kinds.values()),
        "bound_s": config.get("bound_s"),
        "final_states": verdict.states,
        "by_fault": kinds,
        "loss_details": [
            {"fault": f"{f.index}:{f.kind}", "lost": f.lost_count, "ids": f.lost,
             "recovery_s": f.recovery_s}
            for f in verdict.faults if f.lost_count or (f.recovery_s is None and not f.skipped)
        ],
        "lost_before_faults": [d for d in verdict.lost if d["fault"] == "before faults"][:ID_LIMIT],
        "shown_twice_ids": verdict.shown_twice[:ID_LIMIT],
        "not_final_ids": verdict.not_final[:ID_LIMIT],
        "duration_s": round(duration_s, 1),
        **extra,
    }


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def text(s: dict[str, Any]) -> str:
    c = s["config"]
    lines = [
        f"soak: broker {c['broker']}, {s['messages']} messages given "
        f"({s['refused']} refused), {sum(s['faults'].values())} faults in {s['duration_s']} s",
        f"  lost {s['lost']}   shown twice {s['shown_twice']} "
        f"({s['shown_twice_across_client_restarts']} across client restarts)   "
        f"not final {s['not_final']}   late (> {s['bound_s']} s) {s['late']}   "
        f"states {s['final_states']}",
        f"  {'fault':<15}{'ran':>4}{'lost':>6}{'late':>6}{'unrec':>6}"
        f"{'p50 s':>8}{'p99 s':>8}{'max s':>8}",
    ]
    for kind, k in s["by_fault"].items():
        r = k["recovery_s"]
        row = (f"  {kind:<15}{k['count']:>4}{k['lost']:>6}{k['late']:>6}{k['unrecovered']:>6}"
               f"{_fmt(r['p50']):>8}{_fmt(r['p99']):>8}{_fmt(r['max']):>8}")
        if k["skipped"]:
            row += f"   skipped: {k['skip_reason']}"
        lines.append(row)
    lines.append("  " + ("OK: nothing lost, nothing shown twice, every message final"
                         if s["ok"] else "FAILED: see loss_details in the JSON report"))
    return "\n".join(lines)


class Progress:
    """One line, rewritten in place on a terminal, a line every few seconds otherwise."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.tty = sys.stderr.isatty()
        self.every_s = 1.0 if self.tty else every_s
        self._last = -1e9

    def show(self, now: float, line: str) -> None:
        if now - self._last < self.every_s:
            return
        self._last = now
        if self.tty:
            sys.stderr.write("\r" + line[:150].ljust(150))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()
