"""The per-process wiring of settings, store and (when started) presence, node channels, the
router and the hooks.

Celery tasks, the gateway and the CLI reach shared resources through ``get_runtime()`` so that a
process builds its engine once. Tests and the embedded demo install their own runtime.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from delivery.channels import NodeChannels
from delivery.db import make_engine
from delivery.settings import Settings, get_settings
from delivery.store import Store
from presence.runtime import PresenceNode

if TYPE_CHECKING:  # built on the runtime, or heavy to load: naming their types is enough
    from delivery.push.fcm import FcmSender
    from delivery.routing.router import Router


class NackHandler(Protocol):
    """Takes the place of the ``delivery.route`` task for a gateway's nacks; may be async."""

    def __call__(self, *, message_id: str, attempt: int, nacked: list[str],
                 node: str) -> object: ...


@dataclass
class Hooks:
    """What tests, benchmarks and the embedded stack plug in; read at each use, so setting one
    on a running process takes effect at once."""

    nack_handler: NackHandler | None = None
    # After each recorded ack: message id, connection id, whether this ack decided it.
    on_ack: Callable[[str, str, bool], None] | None = None
    # After each decided push: message id, its PushOutcome value.
    on_push: Callable[[str, str], None] | None = None
    # The push step's sender, in place of the one the settings describe.
    fcm_sender: FcmSender | None = None


@dataclass
class Runtime:
    settings: Settings
    store: Store
    # Set by the worker's routing, the gateway command or the embedded stack once started.
    presence: PresenceNode | None = None
    channels: NodeChannels | None = None
    router: Router | None = None  # a worker's (none in a gateway or a producer)
    hooks: Hooks = field(default_factory=Hooks)

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
