"""Every role in one process on the embedded default: SQLite, the in-process Celery broker,
presence replicas on an in-memory network, gateways on free ports and the FCM stub.

``delivery demo`` and ``delivery up`` run on it. The parts are the production ones (router,
sweep, gateway, push task, Celery worker); only the transports are in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

from celery import Celery

from delivery import migrate
from delivery.celery_app import make_app
from delivery.channels import MemoryChannels
from delivery.configs import policy_config, presence_config
from delivery.gateway.server import Gateway
from delivery.push.stub import FcmStub
from delivery.routing.recent import RecentConnections
from delivery.routing.router import Router
from delivery.routing.sweep import SweepLoop
from delivery.runtime import Runtime, set_runtime
from delivery.settings import Settings
from delivery.store import Store
from presence.runtime import MemoryNetwork, PresenceNode
from workers.wiring import celery_hooks

log = logging.getLogger("delivery.embedded")

WORKER = "worker-1"


class EmbeddedStack:
    """Start with ``async with EmbeddedStack(settings, gateways=["gw-a", "gw-b"]) as stack``."""

    def __init__(self, settings: Settings, *, gateways: tuple[str, ...] = ("gw-a", "gw-b"),
                 host: str = "127.0.0.1", ports: tuple[int, ...] = (),
                 fcm_stub: bool = True) -> None:
        self.base_settings = settings
        self.gateway_names = gateways
        self.host = host
        self.ports = ports
        self.use_stub = fcm_stub
        self.network = MemoryNetwork()
        self.channels = MemoryChannels()
        self.stub: FcmStub | None = None
        self.gateways: dict[str, Gateway] = {}
        self.presence: dict[str, PresenceNode] = {}
        self._exit = contextlib.ExitStack()
        self.app: Celery | None = None
        self.runtime: Runtime | None = None
        self.sweep: SweepLoop | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> EmbeddedStack:
        await asyncio.to_thread(self._start_sync)
        for i, name in enumerate(self.gateway_names):
            gw = Gateway(name, self.runtime,  # type: ignore[arg-type]
                         presence=self.presence[name], channels=self.channels,
                         celery_app=self.app)
            await gw.start(self.host, self.ports[i] if i < len(self.ports) else 0)
            self.gateways[name] = gw
        return self

    async def __aexit__(self, *exc: object) -> None:
        for gw in self.gateways.values():
            await gw.stop(timeout=5)
        await asyncio.to_thread(self._exit.close)
        set_runtime(None)

    def _start_sync(self) -> None:
        settings = self.base_settings
        if self.use_stub and not settings.fcm_url:
            self.stub = FcmStub().start()
            self._exit.callback(self.stub.stop)
            settings = dataclasses.replace(settings, fcm_url=self.stub.url,
                                           fcm_project=settings.fcm_project or "embedded")
        self.settings = settings
        migrate.upgrade(settings.effective_database_url)
        self.runtime = rt = Runtime.from_settings(settings)
        set_runtime(rt)
        self._exit.callback(rt.store.engine.dispose)
        pcfg = presence_config(settings)
        for name in (*self.gateway_names, WORKER):
            node = PresenceNode(name, self.network.transport(name), pcfg)
            node.start()
            self._exit.callback(node.stop)
            self.presence[name] = node
        for node in self.presence.values():
            node.wait_synced(5)
        self.app = app = make_app(settings)
        app.conf.broker_transport_options = {
            **app.conf.broker_transport_options, "polling_interval": 0.005}
        recent = RecentConnections()  # where presence last saw each user: asked before a push
        self.presence[WORKER].subscribe(recent.on_diff)
        router = Router(rt.store, self.presence[WORKER], self.channels, policy_config(settings),
                        last_conn=recent.last, **celery_hooks(app))
        rt.router = router
        rt.channels = self.channels
        self._exit.enter_context(_celery_worker(app))
        self.sweep = SweepLoop(router, settings.sweep_interval_s, settings.sweep_batch,
                               lease_s=settings.sweep_lease_s)
        self.sweep.start()
        self._exit.callback(self.sweep.stop)

    # -- what the demo drives ------------------------------------------------------------------

    @property
    def store(self) -> Store:
        assert self.runtime is not None
        return self.runtime.store

    @property
    def router(self) -> Router:
        assert self.runtime is not None
        assert self.runtime.router is not None
        return self.runtime.router

    def url(self, gateway: str) -> str:
        return self.gateways[gateway].url

    def hold_presence(self, seconds: float) -> None:
        """Cut the worker's replica off from the gateways' for a while (the seed's lag)."""
        gws = list(self.gateway_names)
        self.network.partition([WORKER], gws)
        loop = asyncio.get_running_loop()
        loop.call_later(seconds, self.network.heal)

    def send(self, sender: str, recipient: str, body: Any, client_msg_id: str) -> str:
        assert self.app is not None
        from delivery.api import send_message

        return send_message(sender, recipient, body, client_msg_id=client_msg_id, app=self.app)

    def send_group(self, sender: str, conversation: str, body: Any, client_msg_id: str) -> str:
        assert self.app is not None
        from delivery.api import send_to_conversation

        return send_to_conversation(sender, conversation, body, client_msg_id=client_msg_id,
                                    app=self.app)


@contextlib.contextmanager
def _celery_worker(app: Celery) -> Iterator[Any]:
    """A Celery worker consuming the in-process broker in a thread of this process."""
    from celery.contrib.testing.worker import start_worker

    app.loader.import_default_modules()
    with start_worker(app, pool="threads", concurrency=8, perform_ping_check=False,
                      loglevel="WARNING", shutdown_timeout=10, hostname="embedded@localhost"
                      ) as worker:
        yield worker
