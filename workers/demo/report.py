"""The demo's words on the terminal: the live progress line and the final report.

The report is a list of sections, each a function of the result returning its lines: a new
part of the demo adds its own section to ``SECTIONS``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from workers.demo.result import Result

Section = Callable[[Result], list[str]]


def outcomes(result: Result) -> list[str]:
    return [
        f"  messages sent               {result.messages}",
        f"  delivered over WebSocket    {result.delivered_ws}",
        f"  pushed (FCM accepted)       {result.pushed}",
        f"  pending (no device)         {result.pending}",
        f"  expired                     {result.expired}",
        f"  replayed on reconnect       {result.replayed_in_final_phase}",
        f"  LOST                        {result.lost}",
    ]


def races_and_duplicates(result: Result) -> list[str]:
    return [
        f"  seed races forced           {result.forced_races} "
        f"(plus {result.reconnects} ordinary reconnects)",
        f"  duplicate frames (deduped)  {result.duplicate_frames}",
        f"  messages acked twice        {result.duplicate_outcomes}",
        f"  devices pushed twice        {result.duplicate_pushes}",
    ]


def latency_and_totals(result: Result) -> list[str]:
    lat = result.latency_ms
    return [
        f"  send→display latency        p50 {lat['p50']} ms  p99 {lat['p99']} ms  "
        f"max {lat['max']} ms",
        f"  final states in the store   {result.final_states}",
        f"  elapsed                     {result.elapsed_s} s",
    ]


def groups(result: Result) -> list[str]:
    g = result.groups
    if g is None or g.messages == 0:
        return []
    return [
        f"  group conversations         {g.conversations} "
        f"({', '.join(map(str, g.members))} members)",
        f"  group messages sent         {g.messages} ({g.recipient_deliveries} recipient "
        "deliveries)",
        f"  shown to their recipients   {g.shown} (in seq order; {g.shown_late} late after a "
        f"gap, {g.out_of_order} out of order)",
        f"  LOST per recipient          {g.lost}",
        f"  receipts to the senders     {g.receipt_frames}",
        f"  messages missing a delivered receipt  {g.messages_without_all_delivered_receipts}",
        f"  messages with read receipts {g.messages_with_read_receipts}",
        f"  group final states          {g.final_states}",
    ]


SECTIONS: list[Section] = [outcomes, races_and_duplicates, groups, latency_and_totals]


def report(result: Result, mode: str) -> str:
    lines = [f"delivery demo — {mode}"]
    for section in SECTIONS:
        lines += section(result)
    return "\n".join(lines)


def show_progress(done: int, total: int, shown: int, started: float, extra: str = "") -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    rate = done / max(time.monotonic() - started, 1e-9)
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] sent {done}/{total}  shown {shown}  "
          f"{rate:.0f} msg/s{extra}   ", end="", file=sys.stderr, flush=True)


def end_progress() -> None:
    print(file=sys.stderr)
