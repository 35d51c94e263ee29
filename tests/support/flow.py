"""A producer bound for the tests of this process (DELIVERY_MAX_BACKLOG), set and undone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from delivery import flow_gate
from delivery.settings import reset_settings


@contextmanager
def producer_bound(monkeypatch: pytest.MonkeyPatch, bound: int,
                   refresh_ms: int | None = None) -> Iterator[int]:
    """This process's producers refuse sends past ``bound`` queued tasks (settings and the
    gates re-read), then go back to the environment as it was."""
    monkeypatch.setenv("DELIVERY_MAX_BACKLOG", str(bound))
    if refresh_ms is not None:
        monkeypatch.setenv("DELIVERY_BACKLOG_REFRESH_MS", str(refresh_ms))
    reset_settings()
    flow_gate.reset()
    try:
        yield bound
    finally:
        monkeypatch.undo()
        reset_settings()
        flow_gate.reset()
