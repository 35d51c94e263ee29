"""Per-socket flood control that covers WebSocket control frames, and the Origin allow-list.

``websockets`` answers a client's ping inside its Sans-I/O protocol (``recv_frame`` queues the
pong before the connection sees the event), so a budget checked in the receive loop never sees
pings: 10 connections got 915k pongs in 15 s. :func:`guarded_connection_class` builds a
``ServerConnection`` subclass whose protocol charges every ping and pong to the same
:class:`RateBudget` as the data frames, from the TCP accept on (before ``hello`` too). A ping
over budget gets no pong; ``flood_strikes`` refused frames in a row close the socket with 1008.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ProtocolError
from websockets.frames import Frame, Opcode

from delivery.gateway import protocol as p
from delivery.gateway.config import GatewayConfig


class Verdict(Enum):
    """What to do with one frame (:meth:`RateBudget.admit`)."""

    PASS = "pass"  # in budget: handle it
    DROP = "drop"  # over budget: drop it
    WARN = "warn"  # over budget: drop it and tell the client (once per flood)
    CLOSE = "close"  # ``flood_strikes`` refused in a row: close with 1008


class RateBudget:
    """Token bucket of one socket (pure: the caller passes the time).

    ``strikes`` counts refused frames since the bucket was last full; the connection is closed
    when it reaches ``flood_strikes``. ``warned``: the client was told of this flood (one
    ``rate_limited`` error per flood, whichever frame kind started it)."""

    __slots__ = ("burst", "flood_strikes", "rate", "strikes", "t", "tokens", "warned")

    def __init__(self, rate_per_s: float, burst: int, now: float,
                 flood_strikes: int = 50) -> None:
        self.rate = rate_per_s
        self.flood_strikes = flood_strikes
        self.burst = float(burst)
        self.tokens = float(burst)
        self.t = now
        self.strikes = 0
        self.warned = False

    def take(self, now: float) -> bool:
        """Spend one frame; False (and one more strike) when the bucket is empty."""
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= self.burst:
            self.strikes = 0
            self.warned = False
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.strikes += 1
        return False

    def admit(self, now: float, *, warn: bool) -> Verdict:
        """Spend one frame and decide its fate; ``warn``: the frame kind can carry the
        ``rate_limited`` warning (data frames; a control frame is dropped silently)."""
        if self.take(now):
            return Verdict.PASS
        if self.strikes >= self.flood_strikes:
            return Verdict.CLOSE
        if warn and not self.warned:
            self.warned = True
            return Verdict.WARN
        return Verdict.DROP


class Flooded(ProtocolError):
    """Raised inside the protocol's parser after the 1008 close is queued: stops it reading the
    rest of the buffer (the close frame already sent keeps its code)."""


_CONTROL = (Opcode.PING, Opcode.PONG)


def guarded_connection_class(cfg: GatewayConfig) -> type[ServerConnection]:
    """A ``ServerConnection`` class (for ``serve(create_connection=...)``) with a per-socket
    :class:`RateBudget` as ``.budget`` that also charges control frames."""

    class GuardedConnection(ServerConnection):
        budget: RateBudget
        # Expiry (UNIX seconds) of the token this socket authenticated with; set at hello.
        token_exp: float | None = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.budget = RateBudget(cfg.rate_per_s, cfg.rate_burst, self.loop.time(),
                                     cfg.flood_strikes)
            proto = self.protocol
            recv_frame: Callable[[Frame], None] = proto.recv_frame

            def guarded_recv_frame(frame: Frame) -> None:
                if frame.opcode in _CONTROL:
                    verdict = self.budget.admit(self.loop.time(), warn=False)
                    if verdict is Verdict.CLOSE:
                        proto.fail(p.CLOSE_POLICY, "rate limit exceeded")
                        raise Flooded("control frame flood")
                    if verdict is not Verdict.PASS:
                        return  # dropped: no pong, no event
                recv_frame(frame)

            # The protocol object is this connection's own: shadowing the method on the
            # instance changes nothing for any other socket.
            proto.recv_frame = guarded_recv_frame  # type: ignore[method-assign]

    return GuardedConnection


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """``allowed`` empty: any Origin (the token travels in ``hello``, not in a cookie, so a
    foreign page gains nothing from a browser's ambient credentials). Else an exact match,
    compared without a trailing slash and case-insensitively (scheme and host are). No Origin
    header: not a browser (browsers always send one), and a non-browser can claim any Origin
    anyway, so the check protects browsers' users only and lets other clients through."""
    if not allowed or origin is None:
        return True
    want = origin.strip().rstrip("/").lower()
    return any(want == a.lower() for a in allowed)
