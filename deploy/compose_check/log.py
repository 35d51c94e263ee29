"""Progress lines and phase timings: every step says what it does and how long it took."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

START = time.monotonic()
PHASES: list[tuple[str, float]] = []


class CheckFailed(Exception):
    """A missing prerequisite or a failed step: reported as one line, exit 2 (1 = loss)."""


def say(msg: str) -> None:
    print(f"compose-check [{time.monotonic() - START:6.1f}s] {msg}", file=sys.stderr, flush=True)


@contextmanager
def phase(name: str) -> Iterator[None]:
    say(f"{name} ...")
    t0 = time.monotonic()
    try:
        yield
    finally:
        took = time.monotonic() - t0
        PHASES.append((name, took))
        say(f"{name}: {took:.1f}s")
