"""The routing policy: pure, no I/O, no clock. Feed it facts, read one decision.

Given a message (state, attempts, expiry), the local presence view of its recipient and why we
are routing now (a new message, a nack from a gateway, a re-check after a wait, or a passed ack
deadline), it answers exactly one of: dispatch to connections, wait and re-check, push, mark
pending, expire, or nothing to do. A message goes to *every* live connection of the recipient
and is delivered when any one of them acks.

Times are plain float seconds on any clock the caller chooses (wall clock in production, the
virtual clock in the simulation).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import Enum

from delivery.vocabulary import IN_FLIGHT


class Trigger(Enum):
    NEW = "new"  # just accepted
    NACK = "nack"  # a gateway answered: that connection is gone
    RECHECK = "recheck"  # a wait we asked for has passed
    DEADLINE = "deadline"  # the ack deadline passed with no outcome (timeout or a lost task)


@dataclass(frozen=True)
class PolicyConfig:
    ack_timeout_s: float = 2.0
    max_attempts: int = 3
    retry_backoff_s: float = 0.2
    offline_grace_s: float = 0.25
    not_synced_wait_s: float = 0.1
    push_enabled: bool = True
    # After a gateway reported a connection gone, keep re-checking presence (every
    # retry_backoff_s) this long after the send for the user's new connection before pushing.
    reconnect_window_s: float = 1.0
    # Connections one attempt goes to: bounds the attempt rows and frames a message costs
    # whatever number of connections its recipient opens (normal users have a handful).
    max_targets: int = 16
    # Before pushing a recipient who looks offline, send the message to the connection they had
    # last (PresenceView.last): its gateway is the authority on its own connections and hands
    # the frame to the user's live connection on that node, or nacks at once (one node-channel
    # round trip). This catches a reconnect whose join has not replicated yet.
    probe_last_node: bool = True

    def __post_init__(self) -> None:
        if self.max_targets < 1:
            raise ValueError("max_targets must be >= 1")
        if self.ack_timeout_s <= 0:
            raise ValueError("ack_timeout_s must be > 0")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if (self.retry_backoff_s < 0 or self.offline_grace_s < 0 or self.not_synced_wait_s <= 0
                or self.reconnect_window_s < 0):
            raise ValueError("waits must be >= 0 (not_synced_wait_s > 0)")


@dataclass(frozen=True)
class Conn:
    """A connection as presence reports it: the gateway node that holds it and its id."""

    node: str
    conn: str


@dataclass(frozen=True)
class MessageView:
    state: str
    attempts: int
    expires_at: float
    created_at: float | None = None  # when it was accepted (for the reconnect window)


@dataclass(frozen=True)
class PresenceView:
    synced: bool
    conns: Sequence[Conn]
    # The recipient's most recent connection that presence saw end, if still remembered: where
    # to ask before pushing (PolicyConfig.probe_last_node).
    last: Conn | None = None


@dataclass(frozen=True)
class Dispatch:
    targets: tuple[Conn, ...]
    ack_deadline: float


@dataclass(frozen=True)
class Wait:
    """Re-check at ``until`` (Trigger.RECHECK); this is not an attempt."""

    until: float
    reason: str


@dataclass(frozen=True)
class Push:
    reason: str


@dataclass(frozen=True)
class MarkPending:
    reason: str


@dataclass(frozen=True)
class Expire:
    pass


@dataclass(frozen=True)
class Nothing:
    reason: str


Decision = Dispatch | Wait | Push | MarkPending | Expire | Nothing


def decide(
    msg: MessageView,
    presence: PresenceView,
    trigger: Trigger,
    now: float,
    config: PolicyConfig,
    dead_conns: Collection[str] = (),
) -> Decision:
    """One routing decision. ``dead_conns``: connections a gateway has nacked for this message."""
    if msg.state not in IN_FLIGHT:
        return Nothing(f"message is {msg.state}")
    if now >= msg.expires_at:
        return Expire()
    if not presence.synced:
        # An empty or partial replica would send everyone to push: wait for the sync.
        return Wait(now + config.not_synced_wait_s, "presence replica not synced")
    # Sorted for determinism: the same facts always give the same decision.
    targets = tuple(sorted(
        {c for c in presence.conns if c.conn not in dead_conns}, key=lambda c: (c.node, c.conn)
    ))[:config.max_targets]
    if msg.attempts >= config.max_attempts:
        return _fallback(config, f"{msg.attempts} attempts without an ack")
    if targets:
        return Dispatch(targets, now + config.ack_timeout_s)
    probe = _probe(presence, config, dead_conns)
    if trigger is Trigger.NEW and probe is not None:
        # Looks offline, but a reconnect may not have replicated yet: ask the node that last
        # held the user at once (it redirects to a live connection there, or nacks).
        return Dispatch(probe, now + config.ack_timeout_s)
    if trigger is Trigger.NEW and config.offline_grace_s > 0:
        # Nobody to ask, and a join may not have replicated yet: look again before pushing.
        return Wait(now + config.offline_grace_s, "recipient looks offline")
    if trigger is Trigger.NACK and _last_node_said_no(presence, config, dead_conns):
        # Presence lists nobody and the node that last held the user has just said it does not
        # hold them now: waiting for a reconnect to replicate would only delay the push.
        return _fallback(config, "recipient offline (last node asked)")
    if trigger is Trigger.NACK and config.retry_backoff_s > 0:
        # The gateway told us the connection we saw is gone; presence has not caught up with
        # the reconnect (the seed's race): give it time to converge.
        return Wait(now + config.retry_backoff_s, "only dead connections known")
    if (trigger is Trigger.RECHECK and dead_conns and config.retry_backoff_s > 0
            and msg.created_at is not None and now - msg.created_at < config.reconnect_window_s):
        # Still only the dead connection: the user was online a moment ago and is probably
        # reconnecting; look again rather than push someone who is about to be back.
        return Wait(now + config.retry_backoff_s, "waiting for the reconnect to replicate")
    if probe is not None:
        # Ask the node that last held the user before pushing (an attempt like any other).
        return Dispatch(probe, now + config.ack_timeout_s)
    return _fallback(config, "recipient offline")


def _probe(
    presence: PresenceView, config: PolicyConfig, dead_conns: Collection[str]
) -> tuple[Conn, ...] | None:
    """The user's last connection, if its node has not been asked for this message yet."""
    last = presence.last
    if config.probe_last_node and last is not None and last.conn not in dead_conns:
        return (last,)
    return None


def _last_node_said_no(
    presence: PresenceView, config: PolicyConfig, dead_conns: Collection[str]
) -> bool:
    last = presence.last
    return (config.probe_last_node and last is not None and last.conn in dead_conns
            and not presence.conns)


def _fallback(config: PolicyConfig, reason: str) -> Decision:
    if config.push_enabled:
        return Push(reason)
    return MarkPending(f"{reason}; push not configured")


# -- a gateway whose frame lost its connection ------------------------------------------------


@dataclass(frozen=True)
class Keep:
    """Another live connection of the user on this node already has the frame: nothing to
    send and nothing to re-route (its ack, or routing's deadline, settles the message)."""


@dataclass(frozen=True)
class Redirect:
    targets: tuple[str, ...]


@dataclass(frozen=True)
class NackBack:
    """Hand the message back to routing (fresh presence, attempts counted there)."""

    reason: str


RerouteDecision = Keep | Redirect | NackBack


def decide_reroute(
    hops: int, holders: Collection[str], free: Sequence[str], max_redirects: int,
) -> RerouteDecision:
    """What a gateway does with a frame whose connections are gone.

    ``hops``: redirects this frame has already had on this node; ``holders``: the user's other
    live connections here that already have it (in flight, queued or acked); ``free``: those
    that do not. Bounded per message whatever the number of connections: a frame is redirected
    at most ``max_redirects`` times, and never while a connection still holds it (N connections
    closing one by one used to redirect it N-1, N-2, ... times: N² attempt rows).
    """
    if holders:
        return Keep()
    if not free:
        return NackBack("no other connection of the user on this node")
    if hops >= max_redirects:
        return NackBack(f"redirected {hops} times already")
    return Redirect(tuple(free))
