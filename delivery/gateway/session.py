"""One connection's delivery state, without I/O: the send window, the acked-id dedupe, replay.

Sans-I/O in the manner of h11 and websockets' ``protocol.py``: no asyncio, no socket, no clock
(callers pass ``now``). The gateway's :class:`~delivery.gateway.connection.Connection` feeds a
:class:`Session` its events (``offer``, ``acked``, ``sent_next``, ``closed``) and carries out
what they return: wake the writer, record an ack again, reroute the frames a closed connection
still owed. The rate budget is :class:`delivery.gateway.guard.RateBudget`.

The window: a message is *queued* (in the outbox), then *in flight* (sent, not acked), then
*acked* (remembered among the last ``recent_acked`` ids, so a late copy is not sent again).
At most ``max_in_flight`` are in flight; the outbox holds at most ``max_queued`` live frames.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque
from enum import Enum
from typing import NamedTuple


class LiveFrame(NamedTuple):
    """A ``deliver`` frame from routing, kept until the connection acks it (for nacks).

    A named tuple: one is built per frame, and a frozen dataclass costs 4x more to build."""

    id: str
    uuid: uuid.UUID
    user: str
    attempt: int
    conns: tuple[str, ...]
    text: str
    arrived: float = 0.0  # monotonic time the frame reached this gateway (ack latency)
    hops: int = 0  # redirects on this node so far (bounded by GatewayConfig.max_redirects)


class Offer(Enum):
    """What :meth:`Session.offer` did with a message; ``taken``: this connection has, had or
    will send it (an attribute, not a property: read once per frame and connection)."""

    QUEUED = ("queued", True)  # new here: queued for the writer (wake it)
    HELD = ("held", True)  # already queued or in flight here: nothing to do
    # Acked here already (held or not), yet offered again: the store lacks that ack, record
    # it again.
    ACKED = ("acked", True)
    DROPPED = ("dropped", False)  # a live frame and the queue is full: it stays in the store
    CLOSED = ("closed", False)  # the connection is gone

    def __init__(self, label: str, taken: bool) -> None:
        self.label = label
        self.taken = taken


class Acked(NamedTuple):
    """What :meth:`Session.acked` did: ``freed`` a window slot (wake the writer and the
    replay), ``live``: the routing frame the ack answers (None: replayed, or not in flight)."""

    freed: bool
    live: LiveFrame | None


class ReplayRow(Enum):
    """What replay does with one unacked row of the store (:meth:`Session.replay_row`)."""

    OFFER = "offer"  # new here: offer it
    REACK = "reack"  # acked here, yet the store still owes it: that ack was not recorded
    SKIP = "skip"  # queued or in flight here already


class Session:
    """The window and dedupe of one connection (see the module docstring)."""

    __slots__ = ("acked_count", "dropped", "in_flight", "last_rx", "max_in_flight",
                 "max_queued", "open", "outbox", "queued", "recent", "recent_acked", "sent")

    def __init__(self, max_in_flight: int, max_queued: int, recent_acked: int,
                 now: float) -> None:
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self.recent_acked = recent_acked
        # Sent, not yet acked: message id -> the live frame (None when sent by replay).
        self.in_flight: dict[str, LiveFrame | None] = {}
        self.outbox: deque[tuple[str, str, LiveFrame | None]] = deque()
        self.queued: set[str] = set()
        self.recent: OrderedDict[str, None] = OrderedDict()
        self.open = True
        self.last_rx = now
        self.sent = 0
        self.acked_count = 0
        self.dropped = 0

    @property
    def load(self) -> int:
        return len(self.in_flight) + len(self.outbox)

    @property
    def replay_may_read(self) -> bool:
        """Replay reads the next page only while the window and queue hold less than a window
        (so a slow client does not pull its whole backlog into memory)."""
        return self.load < self.max_in_flight

    def has(self, msg_id: str) -> bool:
        return msg_id in self.in_flight or msg_id in self.queued or msg_id in self.recent

    # -- events ----------------------------------------------------------------------------------

    def offer(self, msg_id: str, text: str, live: LiveFrame | None) -> Offer:
        """A message frame for this connection (``live``: from routing; None: from replay)."""
        if not self.open:
            return Offer.CLOSED
        if msg_id in self.in_flight:
            if live is not None and self.in_flight[msg_id] is None:
                self.in_flight[msg_id] = live  # replayed first: remember the attempt for nacks
            # (A client may ack an id it got elsewhere before this copy went out.)
            return Offer.ACKED if msg_id in self.recent else Offer.HELD
        if msg_id in self.queued:
            return Offer.ACKED if msg_id in self.recent else Offer.HELD
        if msg_id in self.recent:
            return Offer.ACKED
        if live is not None and len(self.outbox) >= self.max_queued:
            self.dropped += 1  # routing's deadline and replay resend it
            return Offer.DROPPED
        self.outbox.append((msg_id, text, live))
        self.queued.add(msg_id)
        return Offer.QUEUED

    def sent_next(self) -> str | None:
        """The writer takes the next frame to send (now in flight), or None: nothing queued,
        the window is full or the connection is closed."""
        if not self.open or not self.outbox or len(self.in_flight) >= self.max_in_flight:
            return None
        msg_id, text, live = self.outbox.popleft()
        self.queued.discard(msg_id)
        self.in_flight[msg_id] = live
        self.sent += 1
        return text

    def acked(self, msg_id: str) -> Acked:
        """The client acked ``msg_id`` (any id: one not in flight is remembered all the same)."""
        freed = msg_id in self.in_flight
        live = None
        if freed:
            live = self.in_flight.pop(msg_id)
            self.acked_count += 1
        recent = self.recent
        recent[msg_id] = None
        if len(recent) > self.recent_acked:
            recent.popitem(last=False)
        return Acked(freed, live)

    def received(self, now: float) -> None:
        """A frame arrived (for the idle timeout)."""
        self.last_rx = now

    def idle(self, now: float, idle_s: float) -> bool:
        return self.open and idle_s > 0 and now - self.last_rx > idle_s

    def replay_row(self, msg_id: str) -> ReplayRow:
        if msg_id in self.recent:
            return ReplayRow.REACK
        if self.has(msg_id):
            return ReplayRow.SKIP
        return ReplayRow.OFFER

    def closed(self) -> list[LiveFrame]:
        """The connection ended: the routing frames it still owes an answer for (in flight or
        queued, each once). Offers are refused from now on."""
        self.open = False
        seen: set[str] = set()
        owed: list[LiveFrame] = []
        for live in [*self.in_flight.values(), *(f for _, _, f in self.outbox)]:
            if live is not None and live.id not in seen:
                seen.add(live.id)
                owed.append(live)
        return owed


class ReplayNext(Enum):
    """After a page of replay: read the next page, wait for the tail pass, or stop."""

    NEXT = "next"
    TAIL = "tail"
    DONE = "done"


class ReplayCursor:
    """One replay pass over the store's unacked rows of a user, oldest first, in pages.

    A short second pass (``tail_s`` later) catches messages routed while presence had not yet
    heard of the new connection; it continues from the cursor."""

    __slots__ = ("after", "again", "batch", "tail")

    def __init__(self, batch: int, tail_s: float) -> None:
        self.after = 0  # the store's seq of the last row seen
        self.batch = batch
        self.tail = tail_s > 0
        self.again = False

    def row(self, seq: int) -> None:
        self.after = seq

    def restart(self) -> None:
        """New rows may sit behind the cursor (an ``owed`` notice, a re-subscribed channel):
        read again from the oldest once this page is done. One pass per connection, never two
        side by side — two would offer later seqs ahead of earlier ones."""
        self.again = True

    def page_read(self, rows: int) -> ReplayNext:
        if rows >= self.batch:
            return ReplayNext.NEXT
        if self.again:
            self.again = False
            self.after = 0
            return ReplayNext.NEXT
        if not self.tail:
            return ReplayNext.DONE
        self.tail = False
        return ReplayNext.TAIL
