"""Gateway limits and timers (validated). Defaults suit a chat app; tests and benchmarks tune."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class GatewayConfig:
    # The first frame must be a valid hello within this many seconds (else close 1008).
    hello_timeout_s: float = 5.0
    # Largest client frame accepted (bytes); bigger frames close the connection with 1009.
    max_frame_bytes: int = 16 * 1024
    # Unacked ``message`` frames a connection may have outstanding (live and replay together).
    max_in_flight: int = 64
    # Frames waiting behind the window; beyond this, live frames are dropped (the store keeps
    # the message; routing's ack deadline retries it and replay resends it).
    max_queued: int = 4096
    # Client frames per second (token bucket) and burst; a flood gets an error frame, and
    # ``flood_strikes`` refused frames in a row close the connection with 1008.
    rate_per_s: float = 200.0
    rate_burst: int = 400
    flood_strikes: int = 50
    # Transport keepalive (websockets pings); None disables.
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    # Close a connection that sent no frame (ack, ping, ...) for this long; 0 disables.
    idle_timeout_s: float = 600.0
    close_timeout_s: float = 5.0
    # Acks are recorded in batches: the first ack of a batch waits this long for company.
    ack_batch_s: float = 0.005
    ack_batch_max: int = 500
    # Batches recorded at the same time (a second one starts only for a full batch waiting
    # behind a running one): overlaps store round trips under load. Always 1 on SQLite.
    ack_flushes: int = 2
    # Replay: rows fetched per store query, and a second pass this long after the first ends
    # (catches messages routed while presence had not yet heard of the new connection); 0: off.
    replay_batch: int = 64
    replay_tail_s: float = 1.5
    # permessage-deflate costs CPU per frame and chat frames are small: off by default.
    compression: bool = False
    # Live frames kept per connection to detect duplicates after an ack.
    recent_acked: int = 1024
    # Acks whose batch failed to commit (database down) are kept and retried with backoff up
    # to this many; beyond it the oldest are dropped (their messages are re-sent later and
    # acked again: at-least-once, never a loss). Retries back off up to ack_retry_max_s.
    max_pending_acks: int = 100_000
    ack_retry_max_s: float = 5.0
    # Live connections of one user on this node (DELIVERY_MAX_CONNECTIONS_PER_USER): a new one
    # beyond it closes the user's oldest with 4008 (the newest is the likeliest alive).
    max_conns_per_user: int = 10
    # Times a frame whose connection is gone is redirected to the user's other connections here
    # before it goes back to routing (see routing.policy.decide_reroute).
    max_redirects: int = 2

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or v is None:
                continue
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ValueError(f"GatewayConfig.{f.name} must be a finite number >= 0, got {v!r}")
        for name in ("hello_timeout_s", "max_frame_bytes", "max_in_flight", "rate_per_s",
                     "rate_burst", "flood_strikes", "ack_batch_max", "ack_flushes", "replay_batch",
                     "max_conns_per_user"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GatewayConfig.{name} must be > 0")
        if self.max_frame_bytes < 256:
            raise ValueError("GatewayConfig.max_frame_bytes must be >= 256 (a hello must fit)")
