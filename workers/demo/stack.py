"""What the demo drives, and the stack of separate processes (Redis, PostgreSQL, gateways,
workers and the FCM stub); the embedded stack is ``workers.embedded.EmbeddedStack``."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, Protocol

from celery import Celery

from delivery import migrate
from delivery.api import send_message, send_to_conversation
from delivery.celery_app import make_app
from delivery.db import make_engine
from delivery.settings import Settings
from delivery.store import Store
from workers.devkit.cluster import LocalCluster


class Stack(Protocol):
    """What the demo needs from the embedded stack or the process cluster."""

    @property
    def store(self) -> Store: ...
    @property
    def gateway_names(self) -> tuple[str, ...]: ...

    def url(self, gateway: str) -> str: ...
    def hold_presence(self, seconds: float) -> None: ...
    def send(self, sender: str, recipient: str, body: Any, client_msg_id: str) -> str: ...
    def send_group(self, sender: str, conversation: str, body: Any,
                   client_msg_id: str) -> str: ...


class ClusterStack:
    """The demo's view of a running local cluster."""

    def __init__(self, cluster: LocalCluster, app: Celery, store: Store) -> None:
        self.cluster = cluster
        self.app = app
        self._store = store

    @property
    def store(self) -> Store:
        return self._store

    @property
    def gateway_names(self) -> tuple[str, ...]:
        return tuple(self.cluster.gateways)

    def url(self, gateway: str) -> str:
        return self.cluster.gateways[gateway].url

    def hold_presence(self, seconds: float) -> None:
        self.app.control.broadcast("presence_hold", arguments={"seconds": seconds})

    def send(self, sender: str, recipient: str, body: Any, client_msg_id: str) -> str:
        return send_message(sender, recipient, body, client_msg_id=client_msg_id, app=self.app)

    def send_group(self, sender: str, conversation: str, body: Any, client_msg_id: str) -> str:
        return send_to_conversation(sender, conversation, body, client_msg_id=client_msg_id,
                                    app=self.app)


@contextlib.contextmanager
def cluster_stack(settings: Settings, gateways: int = 2,
                  workers: int = 2) -> Iterator[tuple[ClusterStack, str]]:
    """Start the cluster (FCM stub, gateways, workers); yield its stack and a description."""
    migrate.upgrade(settings.effective_database_url)
    env = dict(os.environ)
    with LocalCluster(env) as cluster:
        if not settings.fcm_url:
            print("starting the FCM stub...", file=sys.stderr)
            cluster.with_env({"DELIVERY_FCM_URL": cluster.start_fcm_stub(),
                              "DELIVERY_FCM_PROJECT": settings.fcm_project or "demo"})
        for i in range(gateways):
            print(f"starting gateway gw-{i}...", file=sys.stderr)
            cluster.start_gateway(f"gw-{i}")
        for i in range(workers):
            print(f"starting worker w{i}...", file=sys.stderr)
            cluster.start_worker(f"w{i}")
        app = make_app(settings)
        engine = make_engine(settings.effective_database_url)
        try:
            mode = (f"Redis + PostgreSQL, {gateways} gateway and {workers} worker processes, "
                    "FCM stub process")
            yield ClusterStack(cluster, app, Store(engine)), mode
        finally:
            app.close()
            engine.dispose()
