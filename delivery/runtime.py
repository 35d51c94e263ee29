"""The per-process wiring of settings, store and (when started) presence and node channels.

Celery tasks, the gateway and the CLI reach shared resources through ``get_runtime()`` so that a
process builds its engine once. Tests and the embedded demo install their own runtime.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from delivery.db import make_engine
from delivery.settings import Settings, get_settings
from delivery.store import Store


@dataclass
class Runtime:
    settings: Settings
    store: Store
    # Set by the worker bootstep / gateway / demo once started (types live in their modules).
    presence: Any = None
    channels: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        engine = make_engine(settings.effective_database_url, pool_size=settings.db_pool_size,
                             max_overflow=settings.db_max_overflow)
        return cls(settings=settings, store=Store(engine))


_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                _runtime = Runtime.from_settings(get_settings())
    return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Install (or clear) the process-wide runtime: the demo and tests wire their own."""
    global _runtime
    with _lock:
        _runtime = runtime
