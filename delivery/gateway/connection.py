"""One authenticated socket: the asyncio shell around its :class:`~.session.Session`.

The session decides (window, dedupe); this class owns the socket, the writer's wake-up events
and the rate budget, and carries out the session's answers.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from delivery.gateway.config import GatewayConfig
from delivery.gateway.guard import RateBudget, Verdict
from delivery.gateway.session import LiveFrame, Offer, ReplayCursor, Session


def new_conn_id(node: str) -> str:
    """Unique across the cluster (node name) and restarts (64 random bits)."""
    return f"{node}.{secrets.token_hex(8)}"


class Connection:
    """One authenticated socket: its session, writer, replayer and rate limiter."""

    __slots__ = ("budget", "cursor", "id", "replayer", "session", "space", "user", "wake", "writer",
                 "ws")

    def __init__(self, conn_id: str, user: str, ws: ServerConnection, cfg: GatewayConfig,
                 now: float) -> None:
        self.id = conn_id
        self.user = user
        self.ws = ws
        self.session = Session(cfg.max_in_flight, cfg.max_queued, cfg.recent_acked, now)
        self.wake = asyncio.Event()  # the writer: something to send, or window room
        self.space = asyncio.Event()  # the replayer: window room
        # The socket's budget, which its pings and pongs also draw on (guard.py).
        budget = getattr(ws, "budget", None)
        self.budget = (budget if isinstance(budget, RateBudget)
                       else RateBudget(cfg.rate_per_s, cfg.rate_burst, now, cfg.flood_strikes))
        self.writer: asyncio.Task[None] | None = None
        self.replayer: asyncio.Task[None] | None = None
        self.cursor: ReplayCursor | None = None  # the running replay's position

    # -- the session's state, read by the gateway, metrics and tests ----------------------------

    @property
    def open(self) -> bool:
        return self.session.open

    @property
    def in_flight(self) -> dict[str, LiveFrame | None]:
        return self.session.in_flight

    @property
    def recent(self) -> OrderedDict[str, None]:
        return self.session.recent

    @property
    def sent(self) -> int:
        return self.session.sent

    @property
    def dropped(self) -> int:
        return self.session.dropped

    @property
    def load(self) -> int:
        return self.session.load

    def has(self, msg_id: str) -> bool:
        return self.session.has(msg_id)

    # -- events ---------------------------------------------------------------------------------

    def offer(self, msg_id: str, text: str, live: LiveFrame | None) -> Offer:
        """Queue a message frame; ``.taken``: this connection has, had or will send it."""
        result = self.session.offer(msg_id, text, live)
        if result is Offer.QUEUED:
            self.wake.set()
        return result

    def acked_id(self, msg_id: str) -> LiveFrame | None:
        """Mark ``msg_id`` acked here; returns the routing frame it answers, if any."""
        freed, live = self.session.acked(msg_id)
        if freed:
            self.wake.set()
            self.space.set()
        return live

    def admit(self, now: float) -> Verdict:
        """The rate budget's verdict on a client frame (shared with the socket's control
        frames)."""
        return self.budget.admit(now, warn=True)

    def close(self) -> list[LiveFrame]:
        """The connection ended: stop its writer and replayer; returns its unacked live frames
        (each once) for the gateway to reroute."""
        owed = self.session.closed()
        self.wake.set()
        self.space.set()
        for task in (self.writer, self.replayer):
            if task is not None:
                task.cancel()
        return owed

    async def write_loop(self) -> None:
        ws, session = self.ws, self.session
        try:
            while session.open:
                await self.wake.wait()
                self.wake.clear()
                while (text := session.sent_next()) is not None:
                    await ws.send(text)
        except ConnectionClosed:
            pass
