"""The routing adapter: reads the store and the local presence replica, asks the pure policy,
and carries out its decision with compare-and-set updates. No decision logic lives here.

Cost on the hot path (a recipient who is online): the send task's insert, one conditional
update that claims the attempt and records its targets (one transaction), and one PUBLISH per
gateway node. Acks are written by the gateway; no Celery task runs per ack.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from delivery.channels import BROADCAST, NodeChannels
from delivery.conversations.requests import GroupSendRequest
from delivery.gateway.frames import place_of
from delivery.gateway.protocol import (
    Deliver,
    encode_deliver,
    encode_deliver_batch,
    owed_frame,
)
from delivery.routing import batch
from delivery.routing.policy import (
    Conn,
    Decision,
    Dispatch,
    Expire,
    MarkPending,
    MessageView,
    Nothing,
    PolicyConfig,
    PresenceView,
    Push,
    Trigger,
    Wait,
    decide,
)
from delivery.store import MessageRecord, Store, Target
from delivery.validation import SendRequest
from delivery.vocabulary import Channel, Result, State
from presence.state import Presence

log = logging.getLogger("delivery.routing")

# How long a claimed push attempt may wait for its push task before the recovery sweep takes
# it back (a task lost with a killed worker costs this delay, not the broker's visibility
# timeout). Once the task starts it moves the deadline past its own send budget, and a task
# that starts after the sweep re-routed finds a newer attempt and does nothing (CAS).
PUSH_DEADLINE_S = 10.0


class PresenceReader(Protocol):
    @property
    def synced(self) -> bool: ...

    def list(self, key: str) -> Sequence[Presence]: ...


# Hands a message to a worker of its recipient's shard (sharded deployments): (message id,
# recipient, trigger, attempt or None, connections known dead). See Router.forward.
Forward = Callable[[str, str, Trigger, int | None, Sequence[str]], None]


def _ts(dt: datetime) -> float:
    return dt.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def deliver_frame(msg: MessageRecord, attempt: int) -> Deliver:
    return Deliver(id=str(msg.id), user=msg.recipient, sender=msg.sender, body=msg.body,
                   sent_at=msg.created_at.isoformat(), seq=msg.seq, attempt=attempt,
                   place=place_of(msg))


class Router:
    """Carries out routing decisions for one process (a worker, or the embedded demo)."""

    def __init__(
        self,
        store: Store,
        presence: PresenceReader,
        channels: NodeChannels,
        config: PolicyConfig,
        *,
        enqueue_push: Callable[[str, int], None],
        schedule_recheck: Callable[[str, int, float, str], None],
        clock: Callable[[], float] = time.time,
        on_decision: Callable[[MessageRecord, Decision, Trigger], None] | None = None,
        last_conn: Callable[[str], Conn | None] | None = None,
        forward: Forward | None = None,
    ) -> None:
        self.store = store
        self.presence = presence
        self.channels = channels
        self.config = config
        self.enqueue_push = enqueue_push
        self.schedule_recheck = schedule_recheck
        self.clock = clock
        self.on_decision = on_decision
        self.last_conn = last_conn  # where presence last saw the user (RecentConnections.last)
        # Sharded: a message whose recipient's shard this process does not replicate is handed
        # to that shard's queue instead of being routed on a view that cannot see the user.
        self.forward = forward

    def _foreign(self, recipient: str) -> bool:
        """True when ``recipient``'s shard is not replicated here (and we can hand it on)."""
        serves = getattr(self.presence, "serves", None)
        return self.forward is not None and serves is not None and not serves(recipient)

    # -- entry points -------------------------------------------------------------------------

    def accept_and_route(self, req: SendRequest) -> MessageRecord:
        """Store a new message and route it. When the recipient is online the first attempt is
        claimed in the insert's own transaction; a duplicate send routes nothing."""
        now = self.clock()
        if self._foreign(req.recipient):
            msg, _ = self.store.accept_request(
                req, now=_dt(now), deadline=_dt(now + self.config.ack_timeout_s))
            if msg.state == State.ACCEPTED and msg.attempts == 0:
                self._hand_on(msg.id, msg.recipient, Trigger.NEW, None, ())
            return msg
        view = MessageView(State.ACCEPTED, 0, now + req.ttl_s)
        decision = decide(view, self._view(req.recipient), Trigger.NEW, now, self.config)
        targets = decision.targets if isinstance(decision, Dispatch) else None
        deadline = decision.ack_deadline if isinstance(decision, Dispatch) else (
            now + self.config.ack_timeout_s)
        msg, created = self.store.accept_request(
            req, now=_dt(now), deadline=_dt(deadline),
            dispatch_to=None if targets is None else [Target(t.node, t.conn) for t in targets],
        )
        if not created:
            if msg.state == State.ACCEPTED and msg.attempts == 0:
                # Stored ahead of the task (a durable send) but not routed yet: route it now.
                # A concurrent duplicate loses the attempt claim (compare-and-set).
                return self._route_existing(msg)
            return msg
        if targets is not None:
            applied = self._publish(msg, 1, targets, now, deadline, ())
        else:
            applied = self._apply(msg, decision, now, ())
        if self.on_decision is not None:
            self.on_decision(msg, applied, Trigger.NEW)
        return msg

    def route_stored(self, req: SendRequest) -> MessageRecord | None:
        """Route a message the producer stored before enqueueing (the default send).

        When the recipient is online, one transaction claims attempt 1 straight from
        ``accepted`` (no read first); otherwise the stored row is read and routed as usual.
        None: the message is not in this store. A duplicate task routes nothing (CAS)."""
        now = self.clock()
        if self._foreign(req.recipient):
            msg = self.store.get(req.message_id)
            if msg is not None and msg.state == State.ACCEPTED and msg.attempts == 0:
                self._hand_on(msg.id, msg.recipient, Trigger.NEW, None, ())
            return msg
        view = MessageView("accepted", 0, now + req.ttl_s)
        decision = decide(view, self._view(req.recipient), Trigger.NEW, now, self.config)
        if isinstance(decision, Dispatch):
            msg = self.store.claim_first_attempt(
                req.message_id, targets=[Target(t.node, t.conn) for t in decision.targets],
                now=_dt(now), deadline=_dt(decision.ack_deadline))
            if msg is not None:
                applied = self._publish(msg, 1, decision.targets, now, decision.ack_deadline,
                                        ())
                if self.on_decision is not None:
                    self.on_decision(msg, applied, Trigger.NEW)
                return msg
        stored = self.store.get(req.message_id)
        if stored is not None and stored.state == "accepted" and stored.attempts == 0:
            self._route(stored, Trigger.NEW, ())
        return stored

    # -- group messages --------------------------------------------------------------------

    def accept_and_route_group(self, req: GroupSendRequest) -> list[MessageRecord]:
        """Store a group message (one transaction: its seq and every recipient's row, attempt
        1 claimed for those online) and route it: one PUBLISH per gateway node holding any
        recipient; the others are routed one by one (push, pending, wait) as any message.
        A duplicate routes only what was stored but never routed."""
        now = self.clock()
        view = MessageView(State.ACCEPTED, 0, now + req.ttl_s)
        decisions: dict[str, Decision] = {}

        def targets_for(user: str) -> list[Target] | None:
            if self._foreign(user):  # sharded: stored here, routed by its shard's worker
                return None
            decision = decide(view, self._view(user), Trigger.NEW, now, self.config)
            decisions[user] = decision
            if isinstance(decision, Dispatch):
                return [Target(t.node, t.conn) for t in decision.targets]
            return None

        deadline = now + self.config.ack_timeout_s
        rows, created = self.store.accept_group(req, now=_dt(now), deadline=_dt(deadline),
                                                targets_for=targets_for)
        if not created:
            self.route_group_rows(rows)
            return rows
        sent = [(m, decisions[m.recipient]) for m in rows if m.state == State.DISPATCHED]
        self._publish_group([(m, d.targets) for m, d in sent if isinstance(d, Dispatch)],
                            now, deadline)
        for m in rows:
            if m.state == State.ACCEPTED and self._foreign(m.recipient):
                self._hand_on(m.id, m.recipient, Trigger.NEW, None, ())
            elif m.state == State.ACCEPTED:
                applied = self._apply(m, decisions[m.recipient], now, ())
                if self.on_decision is not None:
                    self.on_decision(m, applied, Trigger.NEW)
        return rows

    def route_group_stored(self, message_id: uuid.UUID) -> list[MessageRecord]:
        """Route a group message the producer stored before enqueueing."""
        rows = self.store.group_rows(message_id)
        self.route_group_rows(rows)
        return rows

    def route_group_rows(self, rows: Sequence[MessageRecord]) -> None:
        """Route the rows still unrouted (``accepted``, no attempt): the online recipients'
        attempt 1 claimed in one statement and published per node, the others one by one."""
        todo = [m for m in rows if m.state == State.ACCEPTED and m.attempts == 0]
        if not todo:
            return
        now = self.clock()
        deadline = now + self.config.ack_timeout_s
        claims: dict[uuid.UUID, tuple[Conn, ...]] = {}
        others: list[MessageRecord] = []
        for m in todo:
            if self._foreign(m.recipient):  # sharded: its shard's worker routes it
                self._hand_on(m.id, m.recipient, Trigger.NEW, None, ())
                continue
            view = MessageView(m.state, 0, _ts(m.expires_at), _ts(m.created_at))
            decision = decide(view, self._view(m.recipient), Trigger.NEW, now, self.config)
            if isinstance(decision, Dispatch):
                claims[m.id] = decision.targets
            else:
                others.append(m)
        won = self.store.claim_first_attempts(
            [(mid, [Target(t.node, t.conn) for t in ts]) for mid, ts in claims.items()],
            now=_dt(now), deadline=_dt(deadline))
        self._publish_group([(m, claims[m.id]) for m in won], now, deadline)
        for m in others:
            self._route(m, Trigger.NEW, ())

    def _publish_group(self, sent: Sequence[tuple[MessageRecord, tuple[Conn, ...]]],
                       now: float, deadline: float) -> None:
        """Attempt 1 of several rows (a group message's, or a batch of sends): their frames
        grouped per node (``batch.by_node``, pure), one PUBLISH each."""
        by_node = batch.by_node([(deliver_frame(m, 1), targets) for m, targets in sent])
        unreachable: dict[str, list[str]] = defaultdict(list)
        for node, frames in by_node.items():
            payload = (encode_deliver(frames[0]) if len(frames) == 1
                       else encode_deliver_batch(frames))
            if self.channels.publish(node, payload) == 0:
                for f in frames:
                    unreachable[f.id] += f.conns
        for m, targets in sent:
            gone = unreachable.get(str(m.id), [])
            try:
                if gone and len(gone) == len(targets):
                    self.store.finish_attempts(m.id, 1, Result.NACKED, now=_dt(now),
                                               detail="no gateway subscribed")
                    self.route(m.id, Trigger.NACK, attempt=1, nacked=gone)
                elif self.on_decision is not None:
                    self.on_decision(m, Dispatch(targets, deadline), Trigger.NEW)
            except Exception:
                # Claimed and durable: its ack deadline hands it to the recovery sweep; the
                # other rows of the batch go on.
                log.exception("message %s: after publish", m.id)

    def accept_and_route_many(self, reqs: Sequence[SendRequest]) -> list[SendRequest]:
        """``accept_and_route`` for a batch of sends the producer did not store: the online
        recipients' messages are stored with their first attempt claimed in one transaction
        (one commit) and published with one PUBLISH per gateway node. Returns the requests
        left for ``accept_and_route`` one by one: recipients not online here and duplicates,
        each handled on its own."""
        return self._dispatch_many(reqs, stored=False)

    def route_stored_many(self, reqs: Sequence[SendRequest]) -> list[SendRequest]:
        """``route_stored`` for a batch of sends: the online recipients' first attempts are
        claimed in one transaction (one commit) and published with one PUBLISH per gateway
        node. Returns the requests left for ``route_stored`` one by one: recipients not online
        here, and messages this call did not claim (not stored here, already routed) — each
        decided on its own row, so one never holds up or changes another."""
        return self._dispatch_many(reqs, stored=True)

    def _dispatch_many(self, reqs: Sequence[SendRequest], *, stored: bool) -> list[SendRequest]:
        now = self.clock()
        cfg = self.config
        planned: list[tuple[SendRequest, Dispatch]] = []
        rest: list[SendRequest] = []
        for req in reqs:
            view = MessageView(State.ACCEPTED, 0, now + req.ttl_s)
            decision = decide(view, self._view(req.recipient), Trigger.NEW, now, cfg)
            if isinstance(decision, Dispatch):
                planned.append((req, decision))
            else:
                rest.append(req)
        if not planned:
            return rest
        deadline = max(d.ack_deadline for _, d in planned)  # one deadline: decided at one now
        if stored:
            claimed = self.store.claim_first_attempts(
                [(req.message_id, [Target(t.node, t.conn) for t in d.targets])
                 for req, d in planned], now=_dt(now), deadline=_dt(deadline))
        else:
            claimed = self.store.accept_dispatched_many(
                [(req, [Target(t.node, t.conn) for t in d.targets]) for req, d in planned],
                now=_dt(now), deadline=_dt(deadline))
        targets = {req.message_id: d.targets for req, d in planned}
        won = {m.id for m in claimed}
        rest += [req for req, _ in planned if req.message_id not in won]
        self._publish_group([(m, targets[m.id]) for m in claimed], now, deadline)
        return rest

    def _route_existing(self, msg: MessageRecord) -> MessageRecord:
        self._route(msg, Trigger.NEW, ())
        return msg

    def route_new(self, msg: MessageRecord) -> Decision:
        """Route a message that is already stored (state ``accepted``)."""
        return self._route(msg, Trigger.NEW, ())

    def route(
        self,
        message_id: str | uuid.UUID,
        trigger: Trigger,
        *,
        attempt: int | None = None,
        nacked: Iterable[str] = (),
    ) -> Decision:
        msg = self.store.get(uuid.UUID(str(message_id)))
        if msg is None:
            return Nothing("unknown message")
        if attempt is not None and msg.attempts != attempt:
            # A nack or re-check for an attempt that is no longer current changes nothing.
            return Nothing(f"stale: attempt {attempt}, message at {msg.attempts}")
        if self._foreign(msg.recipient):
            return self._hand_on(msg.id, msg.recipient, trigger, attempt, list(nacked))
        dead = set(nacked)
        if trigger is not Trigger.NEW and msg.attempts > 0:
            dead |= self.store.nacked_conns(msg.id)
        return self._route(msg, trigger, dead)

    def route_stalled(self, msg: MessageRecord) -> Decision:
        """The recovery sweep found ``msg`` past its ack deadline."""
        now = self.clock()
        if msg.attempts > 0 and msg.state == State.DISPATCHED:
            self.store.finish_attempts(msg.id, msg.attempts, Result.TIMEOUT, now=_dt(now))
        if self._foreign(msg.recipient):
            # The sweep is global: the claim's lease holds the message until a worker of its
            # shard routes it (lost on the way: the lease runs out and a sweep claims it again).
            return self._hand_on(msg.id, msg.recipient, Trigger.DEADLINE, msg.attempts, ())
        dead = self.store.nacked_conns(msg.id) if msg.attempts > 0 else set()
        return self._route(msg, Trigger.DEADLINE, dead)

    def _hand_on(self, msg_id: uuid.UUID, recipient: str, trigger: Trigger,
                 attempt: int | None, nacked: Sequence[str]) -> Decision:
        assert self.forward is not None
        self.forward(str(msg_id), recipient, trigger, attempt, nacked)
        log.debug("message %s: handed to the shard of %s (%s)", msg_id, recipient, trigger.value)
        return Nothing("another shard's: handed to its queue")

    # -- policy + effects ---------------------------------------------------------------------

    def _view(self, recipient: str) -> PresenceView:
        entries = self.presence.list(recipient)
        synced_for = getattr(self.presence, "synced_for", None)  # sharded: that shard's replica
        synced = synced_for(recipient) if synced_for is not None else self.presence.synced
        return PresenceView(
            synced=synced, conns=[Conn(e.node, e.conn) for e in entries],
            last=self.last_conn(recipient) if self.last_conn is not None else None,
        )

    def _route(self, msg: MessageRecord, trigger: Trigger, dead: set[str] | tuple[()]) -> Decision:
        now = self.clock()
        view = MessageView(msg.state, msg.attempts, _ts(msg.expires_at), _ts(msg.created_at))
        decision = decide(view, self._view(msg.recipient), trigger, now, self.config, dead)
        applied = self._apply(msg, decision, now, dead)
        if self.on_decision is not None:
            self.on_decision(msg, applied, trigger)
        return applied

    def _apply(
        self, msg: MessageRecord, decision: Decision, now: float, dead: set[str] | tuple[()]
    ) -> Decision:
        match decision:
            case Dispatch(targets=targets, ack_deadline=deadline):
                return self._dispatch(msg, targets, now, deadline, dead)
            case Wait(until=until, reason=reason):
                # The deadline is the safety net should the re-check task be lost.
                ok = self.store.transition(
                    msg.id, [msg.state], msg.state, expect_attempts=msg.attempts,
                    ack_deadline=_dt(until + self.config.ack_timeout_s),
                )
                if ok:
                    self.schedule_recheck(str(msg.id), msg.attempts, max(0.0, until - now),
                                          msg.recipient)
                    log.debug("message %s: wait %.3fs (%s)", msg.id, until - now, reason)
                    return decision
                return Nothing("changed while deciding")
            case Push():
                attempt = self.store.start_attempt(
                    msg, channel=Channel.PUSH, targets=[], now=_dt(now),
                    deadline=_dt(now + PUSH_DEADLINE_S),
                )
                if attempt is None:
                    return Nothing("changed while deciding")
                self.enqueue_push(str(msg.id), attempt)
                log.info("message %s: push (attempt %d, %s)", msg.id, attempt, decision.reason)
                self._announce_owed(msg.recipient)
                return decision
            case MarkPending(reason=reason):
                ok = self.store.transition(
                    msg.id, [msg.state], State.PENDING, expect_attempts=msg.attempts,
                    ack_deadline=None, last_error=reason,
                )
                if not ok:
                    return Nothing("changed while deciding")
                self._announce_owed(msg.recipient)
                return decision
            case Expire():
                ok = self.store.transition(
                    msg.id, [msg.state], State.EXPIRED, expect_attempts=msg.attempts,
                    ack_deadline=None, last_error="ttl passed with no channel",
                )
                log.info("message %s: expired", msg.id)
                return decision if ok else Nothing("changed while deciding")
            case Nothing():
                return decision
        raise AssertionError(f"unknown decision {decision!r}")  # pragma: no cover

    def _announce_owed(self, user: str) -> None:
        """Tell every gateway that ``user`` is owed a message that presence could not place.

        Presence may be stale (a delayed or cut link, a replica marked down): a gateway that
        does hold a live connection of ``user`` replays it at once, so a connected user never
        waits for a reconnect. One PUBLISH, heard by every gateway; lost, it costs a delay
        only (the message is replayed on the next connect)."""
        self.channels.publish(BROADCAST, owed_frame(user))

    def _dispatch(
        self,
        msg: MessageRecord,
        targets: tuple[Conn, ...],
        now: float,
        deadline: float,
        dead: set[str] | tuple[()],
    ) -> Decision:
        attempt = self.store.start_attempt(
            msg, channel=Channel.WS, targets=[Target(t.node, t.conn) for t in targets],
            now=_dt(now), deadline=_dt(deadline),
        )
        if attempt is None:
            return Nothing("changed while deciding")
        return self._publish(msg, attempt, targets, now, deadline, dead)

    def _publish(
        self,
        msg: MessageRecord,
        attempt: int,
        targets: tuple[Conn, ...],
        now: float,
        deadline: float,
        dead: set[str] | tuple[()],
    ) -> Decision:
        """Send the claimed attempt's frame to each target node (one PUBLISH per node)."""
        by_node: dict[str, list[str]] = defaultdict(list)
        for t in targets:
            by_node[t.node].append(t.conn)
        frame = deliver_frame(msg, attempt)
        unreachable: list[str] = []
        for node, conns in by_node.items():
            if self.channels.publish(node, encode_deliver(frame._replace(conns=tuple(conns)))) == 0:
                unreachable += conns
        if unreachable and len(unreachable) == len(targets):
            # No gateway listens for any target: they are gone (a crashed node whose presence
            # entries have not timed out yet). Treat it as a nack instead of waiting.
            log.info("message %s: no gateway reachable for %s", msg.id, unreachable)
            self.store.finish_attempts(msg.id, attempt, Result.NACKED, now=_dt(now),
                                       detail="no gateway subscribed")
            return self.route(msg.id, Trigger.NACK, attempt=attempt,
                              nacked=[*dead, *unreachable])
        return Dispatch(targets, deadline)
