"""One authenticated socket: the asyncio shell around its :class:`~.session.Session`.

The session decides (window, dedupe); this class owns the socket, the writer's wake-up events
and the rate budget, and carries out the session's answers.

Sending: when the writer task is parked and the socket can take a frame at once, the caller
(routing's ``deliver``, an ack freeing a slot, replay) writes the frame itself — one task step
per frame instead of two (see :meth:`Connection.can_write_now`). Otherwise it wakes the writer,
which waits out back-pressure and the close path as ``ws.send`` does. Either way frames leave
in the order :meth:`Session.sent_next` hands them out: every ``sent_next`` is followed by its
write to the transport in the same task step, and only one party sends at a time.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import OPEN

from delivery.gateway.config import GatewayConfig
from delivery.gateway.guard import RateBudget, Verdict
from delivery.gateway.session import LiveFrame, Offer, ReplayCursor, Session


def new_conn_id(node: str) -> str:
    """Unique across the cluster (node name) and restarts (64 random bits)."""
    return f"{node}.{secrets.token_hex(8)}"


class Connection:
    """One authenticated socket: its session, writer, replayer and rate limiter."""

    __slots__ = ("budget", "cursor", "direct", "id", "parked", "replayer", "session", "space",
                 "user", "wake", "writer", "ws")

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
        # The writer waits on ``wake`` with nothing in hand: a caller may send for it.
        self.parked = False
        self.direct = 0  # frames written by the caller, not the writer (tests, bench)

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
            self._push()
        return result

    def acked_id(self, msg_id: str) -> LiveFrame | None:
        """Mark ``msg_id`` acked here; returns the routing frame it answers, if any."""
        freed, live = self.session.acked(msg_id)
        if freed:
            self._push()
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
        self.parked = False
        self.wake.set()
        self.space.set()
        for task in (self.writer, self.replayer):
            if task is not None:
                task.cancel()
        return owed

    # -- sending ------------------------------------------------------------------------------

    def can_write_now(self) -> bool:
        """Whether a frame may be written from the caller, as ``ws.send`` would without ever
        suspending (websockets' asyncio ``send`` / ``send_context`` / ``drain``)."""
        ws = self.ws
        return (
            # The writer is idle: it holds no frame taken from the session (so nothing taken
            # earlier can go out after ours) and is not waiting in ``drain``.
            self.parked
            # ``send_context`` only writes in OPEN; CLOSING and CLOSED go through its close
            # path (wait for the close, raise ConnectionClosed), which the writer takes.
            and ws.protocol.state is OPEN
            # ``send`` waits for a fragmented message to finish before sending another.
            and ws.send_in_progress is None
            # Back-pressure: the transport's buffer is over its high-water mark and ``drain``
            # would wait for ``resume_writing``; the writer waits instead of the caller.
            and not ws.paused
            # ``drain`` yields once on a closing transport so ``connection_lost`` runs first.
            and not ws.transport.is_closing()
        )

    def _push(self) -> None:
        """There may be a frame to send: write it here if the socket takes it at once, else
        wake the writer."""
        session, ws = self.session, self.ws
        while self.can_write_now():
            text = session.sent_next()
            if text is None:
                return  # the outbox is empty or the window full: nothing owed to the writer
            self.direct += 1
            # What ``ws.send(text)`` does up to its ``drain``: frame it, write it out.
            ws.protocol.send_text(text.encode())
            try:
                ws.send_data()
            except Exception as exc:
                # As ``send_context`` does on a failed write: abort; ``connection_lost`` follows
                # and the gateway's close() returns this frame (now in flight) for rerouting.
                ws.set_connection_exc(exc)
                ws.transport.abort()
                return
        # Back-pressure or closing: the writer sends the rest (and waits) like ``ws.send``.
        self.parked = False
        self.wake.set()

    async def write_loop(self) -> None:
        ws, session, wake = self.ws, self.session, self.wake
        try:
            while session.open:
                self.parked = not wake.is_set()
                await wake.wait()
                self.parked = False
                wake.clear()
                while (text := session.sent_next()) is not None:
                    await ws.send(text)
        except ConnectionClosed:
            pass
        finally:
            self.parked = False
