"""The WebSocket gateway: authenticated connections that ack, replay, nack and survive bad input.

One :class:`Gateway` per node. It serves ``/ws`` (the wire protocol in docs/protocol.md) and the
browser demo (``/`` and ``/client.js``, static.py) on the same port, tracks each authenticated
connection in its presence replica, receives ``deliver`` frames for its connections on the node
channel, and records client acks in the store in small batches.

This module is the I/O shell: the decisions live in sans-I/O cores it feeds and obeys —
``session.py`` (each connection's window, dedupe and replay), ``ack_batcher.py`` (ack batches
and their retries; ``ack_recorder.py`` is its asyncio shell), ``protocol.py`` (typed frames),
``guard.py`` (rate budget) and ``delivery.routing.policy.decide_reroute`` (frames whose
connections are gone).

Threading: everything runs on one asyncio loop, except the node-channel handler (called from
the channel's thread; it only queues frames for the loop) and store calls (a small thread pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from delivery import metrics
from delivery.channels import BROADCAST, NodeChannels, Subscription
from delivery.clock import utcnow
from delivery.gateway import health
from delivery.gateway import protocol as p
from delivery.gateway.ack_batcher import AckBatcher
from delivery.gateway.ack_recorder import AckItem, AckRecorder, AckRow
from delivery.gateway.config import GatewayConfig
from delivery.gateway.connection import Connection, new_conn_id
from delivery.gateway.frames import frame_for
from delivery.gateway.guard import Verdict, guarded_connection_class, origin_allowed
from delivery.gateway.session import LiveFrame, Offer, ReplayCursor, ReplayNext, ReplayRow
from delivery.gateway.static import load_static, static_response
from delivery.gateway.tokens import TokenError, keyring_for, verify_claims
from delivery.routing.policy import Keep, Redirect, decide_reroute
from delivery.runtime import Runtime
from delivery.store.acks import nack_attempts, record_acks, redirect_attempt
from delivery.task_names import ROUTE_TASK

if TYPE_CHECKING:  # made on the first nack only: the gateway does not load Celery before
    from celery import Celery

log = logging.getLogger("delivery.gateway")

T = TypeVar("T")
READ_TRIES = 5


class PresenceTracker(Protocol):
    """The part of a presence node the gateway uses (``presence.runtime.PresenceNode``)."""

    def track(self, key: str, conn: str, meta: dict[str, Any]) -> object: ...

    def untrack(self, key: str, conn: str) -> object: ...


__all__ = ["Gateway", "PresenceTracker", "close_draining"]


class Gateway:
    """A gateway node.

    ``Gateway(node, runtime, config, presence=..., channels=..., celery_app=...)``; then
    ``await start(host, port)`` and ``await stop()``. ``presence`` and ``channels`` default to
    ``runtime.presence`` / ``runtime.channels``; the caller owns them (starts and stops them).
    Hooks in ``runtime.hooks``: ``nack_handler(**kwargs)`` replaces the ``delivery.route``
    task for nacks, ``on_ack(msg_id, conn, won)`` is called after each recorded ack.
    """

    def __init__(
        self,
        node: str,
        runtime: Runtime,
        config: GatewayConfig | None = None,
        *,
        presence: PresenceTracker | None = None,
        channels: NodeChannels | None = None,
        celery_app: Celery | None = None,
        db_threads: int = 4,
    ) -> None:
        if not node or ":" in node or len(node) > 64:
            raise ValueError(f"node name must be 1-64 characters without ':', got {node!r}")
        self.node = node
        self.runtime = runtime
        self.config = config or GatewayConfig()
        self.presence: PresenceTracker | None = (
            presence if presence is not None else runtime.presence)
        self.channels = channels if channels is not None else runtime.channels
        self._celery = celery_app
        self._db = ThreadPoolExecutor(max_workers=db_threads, thread_name_prefix=f"gw-{node}-db")
        self.conns: dict[str, Connection] = {}
        self.by_user: dict[str, dict[str, Connection]] = {}
        self.stats: dict[str, int] = dict.fromkeys(
            ("accepted", "rejected", "closed", "frames_sent", "acks", "acks_won", "nacks",
             "redirects", "errors", "node_frames", "dropped", "ack_batches", "ack_flush_us",
             "ack_retries", "acks_dropped", "owed_replays", "evicted"), 0)
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sub: Subscription | None = None
        self._broadcast_sub: Subscription | None = None
        self._stopping = False
        self._inbox: deque[dict[str, Any]] = deque()
        self._inbox_lock = threading.Lock()
        self._inbox_scheduled = False
        # SQLite has one writer: a second batch would only wait for the first one's lock.
        engine = getattr(runtime.store, "engine", None)
        sqlite = engine is not None and engine.dialect.name == "sqlite"
        cfg = self.config
        batcher: AckBatcher[AckItem] = AckBatcher(
            batch_s=cfg.ack_batch_s, batch_max=cfg.ack_batch_max,
            max_flushes=1 if sqlite else cfg.ack_flushes,
            max_pending=cfg.max_pending_acks, retry_max_s=cfg.ack_retry_max_s)
        self._ack_recorder = AckRecorder(node, batcher, self._record_acks, self.stats,
                                         runtime.hooks)
        self._queue_ack = self._ack_recorder.queue  # bound once: called per ack
        self._tasks: set[asyncio.Task[Any]] = set()
        self._housekeeper: asyncio.Task[None] | None = None
        self._metrics_task: asyncio.Task[None] | None = None
        self._static = load_static()
        self.host = ""
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"ws://{host}:{self.port}/ws"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen and subscribe to the node channel; returns the port (useful with port 0)."""
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        self._server = await serve(
            self._handle, host, port,
            process_request=self._process_request,
            create_connection=guarded_connection_class(cfg),
            compression="deflate" if cfg.compression else None,
            max_size=cfg.max_frame_bytes,
            ping_interval=cfg.ping_interval_s,
            ping_timeout=cfg.ping_timeout_s,
            close_timeout=cfg.close_timeout_s,
            logger=logging.getLogger("delivery.gateway.ws"),
        )
        self.host = host
        self.port = int(self._server.sockets[0].getsockname()[1])
        if self.channels is not None:
            self._sub = self.channels.subscribe(self.node, self._from_channel,
                                                on_resubscribed=self._from_channel_resubscribed)
            self._broadcast_sub = self.channels.subscribe(
                BROADCAST, self._from_channel, on_resubscribed=self._from_channel_resubscribed)
        self._housekeeper = asyncio.create_task(self._housekeep())
        self._metrics_task = asyncio.create_task(self._export_metrics())
        return self.port

    async def stop(self, timeout: float = 10.0) -> None:
        """Graceful: stop accepting, untrack every connection, close them with 1001, flush acks."""
        if self._stopping:
            return
        self._stopping = True
        server = self._server
        for conn in list(self.conns.values()):
            self._untrack(conn)
        if server is not None:
            server.close(close_connections=True, code=p.CLOSE_GOING_AWAY,
                         reason="gateway shutting down")
            try:
                await asyncio.wait_for(server.wait_closed(), timeout)
            except TimeoutError:
                log.warning("gateway %s: connections still open after %.0fs", self.node, timeout)
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        if self._metrics_task is not None:
            self._metrics_task.cancel()
            metrics.forget_gateway(self.node)
        for sub in (self._sub, self._broadcast_sub):
            if sub is not None:
                sub.close()
        self._sub = self._broadcast_sub = None
        self._drain_inbox()
        await self._ack_recorder.flush_all(timeout)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        self._db.shutdown(wait=False)

    # -- HTTP: demo page and client ----------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.method != "GET":
            resp = connection.respond(405, "method not allowed\n")
            resp.headers["Allow"] = "GET"
            return resp
        path = request.path.split("?", 1)[0]
        if path == "/ws":
            if self._stopping:
                return connection.respond(503, "gateway shutting down\n")
            if not origin_allowed(request.headers.get("Origin"),
                                  self.runtime.settings.origins):
                return connection.respond(403, "origin not allowed\n")
            return None
        if (probe := health.respond(self, connection, path)) is not None:
            return probe  # type: ignore[return-value]  # /healthz, /readyz: websockets awaits it
        return static_response(connection, self._static, path)

    # -- connections ------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        if self._stopping:
            await ws.close(p.CLOSE_GOING_AWAY, "gateway shutting down")
            return
        user = await self._handshake(ws)
        if user is None:
            self.stats["rejected"] += 1
            return
        self._admit(user)
        loop = asyncio.get_running_loop()
        conn = Connection(new_conn_id(self.node), user, ws, self.config, loop.time())
        self.conns[conn.id] = conn
        self.by_user.setdefault(user, {})[conn.id] = conn
        self.stats["accepted"] += 1
        try:
            self._track(conn)  # before welcome: routing may see the connection at once
            await ws.send(p.welcome_frame(conn.id, user))
            conn.writer = asyncio.create_task(conn.write_loop())
            conn.replayer = asyncio.create_task(self._replay(conn))
            await self._receive(conn)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("gateway %s: connection %s failed", self.node, conn.id)
            await ws.close(p.CLOSE_INTERNAL, "internal error")
        finally:
            self._forget(conn)

    def _admit(self, user: str) -> None:
        """Make room for one more connection of ``user``: past ``max_conns_per_user`` the oldest
        are closed (4008). Oldest, not the new one: after a network change a phone's old sockets
        linger half-open until the ping timeout, and refusing the new one would lock it out."""
        mine = self.by_user.get(user, {})
        excess = len(mine) + 1 - self.config.max_conns_per_user
        for old in list(mine.values())[:max(0, excess)]:  # dicts keep accept order
            self.stats["evicted"] += 1
            self._forget(old)  # now: untracked, its unacked frames answered, the count exact
            self._spawn(old.ws.close(p.CLOSE_TOO_MANY_CONNECTIONS,
                                     "too many connections for this user"))

    async def _handshake(self, ws: ServerConnection) -> str | None:
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.hello_timeout_s):
                raw = await ws.recv()
        except TimeoutError:
            await close_draining(ws, p.CLOSE_POLICY, f"no hello within {cfg.hello_timeout_s:g}s")
            return None
        except ConnectionClosed:
            return None
        try:
            frame = p.parse_client_frame(raw)
        except p.FrameError as exc:
            code = p.CLOSE_INVALID_DATA if exc.code == p.E_INVALID_JSON else p.CLOSE_POLICY
            with contextlib.suppress(ConnectionClosed):  # the error frame, then the close
                await ws.send(p.error_frame(exc.code, exc.message, exc.ref))
            await close_draining(ws, code, f"first frame must be a hello: {exc.message}"[:120])
            return None
        if not isinstance(frame, p.Hello):
            await close_draining(ws, p.CLOSE_POLICY, "first frame must be a hello")
            return None
        try:
            claims = verify_claims(frame.token, keyring_for(self.runtime.settings))
        except TokenError as exc:
            await close_draining(ws, p.CLOSE_POLICY, exc.reason)
            return None
        if self._stopping:
            await ws.close(p.CLOSE_GOING_AWAY, "gateway shutting down")
            return None
        ws.token_exp = claims.exp  # type: ignore[attr-defined]  # _receive closes then
        return claims.user

    async def _receive(self, conn: Connection) -> None:
        ws = conn.ws
        # The session lasts as long as its token: close with 1008 "token expired" then (the
        # clients reconnect with a fresh token from their token source).
        exp = getattr(ws, "token_exp", None)
        expiry = None
        if exp is not None:
            loop = asyncio.get_running_loop()
            # A plain close: the loop below keeps reading, so the close handshake completes.
            expiry = loop.call_later(max(0.0, exp - time.time()),
                                     lambda: self._spawn(ws.close(p.CLOSE_POLICY,
                                                                  "token expired")))
        try:
            await self._receive_frames(conn)
        finally:
            if expiry is not None:
                expiry.cancel()

    async def _receive_frames(self, conn: Connection) -> None:
        ws, cfg = conn.ws, self.config
        loop = asyncio.get_running_loop()
        session = conn.session
        async for raw in ws:
            now = loop.time()
            session.received(now)
            verdict = conn.admit(now)
            if verdict is not Verdict.PASS:
                if verdict is Verdict.CLOSE:
                    await close_draining(ws, p.CLOSE_POLICY, "rate limit exceeded")
                    return
                if verdict is Verdict.WARN:
                    await ws.send(p.error_frame(
                        p.E_RATE_LIMITED,
                        f"too many frames (limit {cfg.rate_per_s:g}/s); frames are being dropped",
                    ))
                continue
            try:
                frame = p.parse_client_frame(raw)
            except p.FrameError as exc:
                self.stats["errors"] += 1
                await ws.send(p.error_frame(exc.code, exc.message, exc.ref))
                continue
            if isinstance(frame, p.Ack):
                msg_id = frame.id
                live = conn.acked_id(msg_id)
                if live is not None and live.arrived:
                    self._queue_ack(frame.uuid, conn.user, conn.id, msg_id,
                                    time.monotonic() - live.arrived, live.attempt)
                else:
                    self._queue_ack(frame.uuid, conn.user, conn.id, msg_id)
            elif isinstance(frame, p.Ping):
                await ws.send(p.PONG_FRAME)
            elif isinstance(frame, p.Read):
                self._spawn(self._record_read(conn.user, frame))
            else:  # a second hello
                self.stats["errors"] += 1
                await ws.send(p.error_frame(
                    p.E_ALREADY_AUTHENTICATED, "this connection is already authenticated",
                    p.HELLO))

    def _track(self, conn: Connection) -> None:
        if self.presence is None:
            return
        try:
            self.presence.track(conn.user, conn.id, {"node": self.node})
        except Exception:
            log.exception("gateway %s: presence track failed for %s", self.node, conn.id)

    def _untrack(self, conn: Connection) -> None:
        if self.presence is None:
            return
        try:
            self.presence.untrack(conn.user, conn.id)
        except Exception:
            log.exception("gateway %s: presence untrack failed for %s", self.node, conn.id)

    def _forget(self, conn: Connection) -> None:
        """The connection ended (any reason): untrack it and answer for its unacked frames."""
        if not conn.open:
            return
        owed = conn.close()
        self.conns.pop(conn.id, None)
        mine = self.by_user.get(conn.user)
        if mine is not None:
            mine.pop(conn.id, None)
            if not mine:
                del self.by_user[conn.user]
        if not self._stopping:
            self._untrack(conn)  # on stop, every connection was untracked first
        self.stats["closed"] += 1
        self.stats["frames_sent"] += conn.sent
        self.stats["dropped"] += conn.dropped
        for live in owed:
            self._reroute(live, (conn.id,))

    # -- replay ---------------------------------------------------------------------------------

    async def _replay(self, conn: Connection) -> None:
        cfg, store, session = self.config, self.runtime.store, conn.session
        cursor = conn.cursor = ReplayCursor(cfg.replay_batch, cfg.replay_tail_s)
        try:
            while session.open:
                while not session.replay_may_read and session.open:
                    conn.space.clear()
                    await conn.space.wait()
                if not session.open:
                    return
                rows = await self._db_call(partial(
                    store.unacked_for, conn.user, after_seq=cursor.after, limit=cfg.replay_batch))
                for m in rows:
                    cursor.row(m.seq)
                    mid = str(m.id)
                    step = session.replay_row(mid)
                    if step is ReplayRow.REACK:
                        self._queue_ack(m.id, conn.user, conn.id, mid)
                    elif step is ReplayRow.OFFER:
                        conn.offer(mid, frame_for(m), None)
                then = cursor.page_read(len(rows))
                if then is ReplayNext.DONE:
                    return
                if then is ReplayNext.TAIL:
                    await asyncio.sleep(cfg.replay_tail_s)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("gateway %s: replay for %s failed", self.node, conn.id)

    # -- node channel: frames from routing --------------------------------------------------------

    def _from_channel(self, frame: dict[str, Any]) -> None:
        """Called from the channel's thread: hand the frame to the loop (batched wake-ups)."""
        loop = self._loop
        if loop is None:
            return
        with self._inbox_lock:
            self._inbox.append(frame)
            if self._inbox_scheduled:
                return
            self._inbox_scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are gone anyway
            loop.call_soon_threadsafe(self._drain_inbox)

    def _from_channel_resubscribed(self) -> None:
        """Called from the channel's thread: the node channel is back after a lost link."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.replay_all)

    def replay_all(self) -> None:
        """Frames published while the node channel was down are gone, and routing may have
        turned their messages to push or pending meanwhile: replay every live connection's
        unacked messages, as on connect. Must run on the loop."""
        log.info("gateway %s: node channel re-subscribed; replaying %d connection(s)",
                 self.node, len(self.conns))
        for conn in list(self.conns.values()):
            if conn.open:
                self._start_replay(conn)

    def _replay_user(self, user: str) -> None:
        """Routing could not place a message for ``user``; if we hold a live connection of
        theirs, presence was stale: replay their unacked messages to it now."""
        for conn in list(self.by_user.get(user, {}).values()):
            if conn.open:
                self.stats["owed_replays"] += 1
                self._start_replay(conn)

    def _start_replay(self, conn: Connection) -> None:
        """Replay ``conn``'s unacked rows from the oldest: restart the running pass if there is
        one (ReplayCursor.restart), else start one."""
        running = conn.replayer
        if running is not None and not running.done() and conn.cursor is not None:
            conn.cursor.restart()
            return
        conn.replayer = asyncio.create_task(self._replay(conn))

    def _drain_inbox(self) -> None:
        with self._inbox_lock:
            frames = list(self._inbox)
            self._inbox.clear()
            self._inbox_scheduled = False
        for frame in frames:
            try:
                self.deliver(frame)
            except Exception:
                # The frame carries the body: log its id only.
                log.exception("gateway %s: bad node frame for message %r", self.node,
                              frame.get("id") if isinstance(frame, dict) else None)

    def deliver(self, frame: dict[str, Any]) -> None:
        """Handle one node frame (``{"type": "deliver", ...}``); must run on the loop."""
        self.stats["node_frames"] += 1
        node_frame = p.decode_node_frame(frame)
        if isinstance(node_frame, p.Owed):
            self._replay_user(node_frame.user)
            return
        if isinstance(node_frame, p.UnknownNodeFrame):
            log.warning("gateway %s: ignoring node frame of type %r", self.node, node_frame.type)
            return
        if isinstance(node_frame, p.DeliverBatch):  # a group message's recipients here
            for one in node_frame.frames:
                self._deliver_one(one)
            return
        self._deliver_one(node_frame)

    def _deliver_one(self, node_frame: p.Deliver) -> None:
        msg_id, user = node_frame.id, node_frame.user
        live = LiveFrame(
            id=msg_id, uuid=uuid.UUID(msg_id), user=user, attempt=node_frame.attempt,
            conns=node_frame.conns, text=node_frame.message_frame(), arrived=time.monotonic(),
        )
        gone: list[str] = []
        reached = False
        for cid in live.conns:
            conn = self.conns.get(cid)
            offered = (conn.offer(msg_id, live.text, live)
                       if conn is not None and conn.user == user else Offer.CLOSED)
            if offered.taken:
                reached = True
                if offered is Offer.ACKED:
                    # Sent again although acked here: the store did not get that ack.
                    self._queue_ack(live.uuid, user, cid, msg_id)
            else:
                gone.append(cid)
        if not reached:
            self._reroute(live, tuple(gone))
        elif gone:
            self._spawn(self._db_call(partial(
                nack_attempts, self.runtime.store, live.uuid, live.attempt, gone,
                now=utcnow(), detail="connection gone")))

    def _reroute(self, live: LiveFrame, gone: tuple[str, ...]) -> None:
        """The frame's connections are gone: keep it where another connection has it, redirect
        it to the user's other connections (a bounded number of times), or nack."""
        others: list[Connection] = []
        if not self._stopping:
            others = [c for c in self.by_user.get(live.user, {}).values()
                      if c.open and c.id not in gone]
        holders = [c for c in others if c.has(live.id)]
        decision = decide_reroute(live.hops, [c.id for c in holders],
                                  [c.id for c in others if not c.has(live.id)],
                                  self.config.max_redirects)
        if isinstance(decision, Keep):
            for c in holders:
                c.offer(live.id, live.text, live)  # track the live frame there (for its nack)
            self._spawn(self._db_call(partial(
                nack_attempts, self.runtime.store, live.uuid, live.attempt, gone,
                now=utcnow(), detail="connection gone; another connection has it")))
        elif isinstance(decision, Redirect):
            targets = [c for c in others if c.id in decision.targets]
            self._spawn(self._redirect(live._replace(hops=live.hops + 1), gone, targets))
        else:
            self._spawn(self._nack(live, gone))

    async def _redirect(self, live: LiveFrame, gone: tuple[str, ...],
                        others: list[Connection]) -> None:
        # Record first, so the ack that may follow finds the new attempt row open.
        await self._db_call(partial(
            redirect_attempt, self.runtime.store, live.uuid, live.attempt,
            from_conns=gone, to_conns=[c.id for c in others], node=self.node, now=utcnow()))
        taken = [c for c in others if c.offer(live.id, live.text, live).taken]
        if taken:
            self.stats["redirects"] += 1
        else:
            await self._nack(live, tuple(c.id for c in others))

    async def _nack(self, live: LiveFrame, gone: tuple[str, ...]) -> None:
        self.stats["nacks"] += 1
        await self._db_call(partial(
            nack_attempts, self.runtime.store, live.uuid, live.attempt, gone,
            now=utcnow(), detail="connection gone"))
        handler = self.runtime.hooks.nack_handler
        if handler is not None:
            result = handler(message_id=live.id, attempt=live.attempt, nacked=list(gone),
                             node=self.node)
            if inspect.isawaitable(result):
                await result
            return
        kwargs = {"message_id": live.id, "attempt": live.attempt, "nacked": list(gone),
                  "node": self.node}
        app = self._celery_app()
        # ``recipient`` picks the shard queue (delivery.celery_app.shard_routes).
        await self._db_call(partial(app.send_task, ROUTE_TASK, kwargs={**kwargs,
                                    "recipient": live.user}, ignore_result=True))

    def _celery_app(self) -> Celery:
        if self._celery is None:
            from delivery.celery_app import make_app

            self._celery = make_app(self.runtime.settings)
        return self._celery

    # -- acks -----------------------------------------------------------------------------------

    @property
    def _acks(self) -> list[AckItem]:
        """The acks waiting to be recorded (oldest first)."""
        return self._ack_recorder.pending

    async def _record_acks(self, rows: list[AckRow], now: datetime) -> list[bool]:
        return await self._db_call(partial(self._record_acks_now, rows, now))

    def _record_acks_now(self, rows: list[AckRow], now: datetime) -> list[bool]:
        """In the executor: record the acks (and the group senders' receipts, in the same
        transaction), then tell the gateways holding those senders."""
        settings = self.runtime.settings
        outcome = record_acks(self.runtime.store, rows, now, receipt_ttl_s=settings.message_ttl_s,
                              direct_receipts=bool(settings.direct_receipts))
        self._announce_owed(outcome.owed)
        return outcome.won

    def _announce_owed(self, users: set[str]) -> None:
        """One ``owed`` broadcast per user owed new receipts: the gateways holding them
        replay (this one included). Lost, it costs a delay only: receipts are stored and
        replayed on the user's next connection."""
        channels = self.channels
        if channels is None:  # no node channels (a test gateway): replay on reconnect only
            return
        for user in users:
            try:
                channels.publish(BROADCAST, p.owed_frame(user))
            except Exception as exc:
                log.warning("gateway %s: announcing receipts failed (%s)", self.node,
                            type(exc).__name__)

    async def _record_read(self, user: str, frame: p.Read) -> None:
        """Record a ``read`` frame (a few tries while the store is down; a read lost then
        is repeated by the client's next ``read`` of a later seq)."""
        for attempt in range(READ_TRIES):
            try:
                await self._db_call(partial(self._record_read_now, user, frame))
                return
            except Exception as exc:
                log.warning("gateway %s: recording a read failed (%s)", self.node,
                            type(exc).__name__)
                await asyncio.sleep(0.2 * 2 ** attempt)

    def _record_read_now(self, user: str, frame: p.Read) -> None:
        owed = self.runtime.store.record_read(
            user, frame.conversation, frame.seq, now=utcnow(),
            ttl_s=self.runtime.settings.message_ttl_s,
            direct=bool(self.runtime.settings.direct_receipts))
        self._announce_owed(owed)

    # -- helpers --------------------------------------------------------------------------------

    async def _db_call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("gateway %s: background task failed", self.node,
                      exc_info=task.exception())

    async def _export_metrics(self, period: float = 1.0) -> None:
        """Feed the Prometheus gauges and counters (served when DELIVERY_METRICS_PORT > 0)."""
        while True:
            await asyncio.sleep(period)
            try:
                metrics.update_gateway(self.snapshot(), source=self.node)
                stats = getattr(self.presence, "stats", None)
                if callable(stats):
                    metrics.update_presence(stats())
            except Exception:
                log.exception("gateway %s: metrics export failed", self.node)

    async def _housekeep(self) -> None:
        idle = self.config.idle_timeout_s
        period = min(idle / 4, 5.0) if idle > 0 else 5.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            if idle <= 0:
                continue
            now = loop.time()
            for conn in list(self.conns.values()):
                if conn.session.idle(now, idle):
                    self._spawn(conn.ws.close(p.CLOSE_NORMAL, "idle timeout"))

    def snapshot(self) -> dict[str, Any]:
        """Counters and gauges for metrics and ``delivery status``."""
        out: dict[str, Any] = dict(self.stats)
        out["connections"] = len(self.conns)
        out["users"] = len(self.by_user)
        out["in_flight"] = sum(len(c.in_flight) for c in self.conns.values())
        out["frames_sent"] += sum(c.sent for c in self.conns.values())
        out["time"] = time.time()
        return out


async def close_draining(ws: ServerConnection, code: int, reason: str) -> None:
    """Close, reading (and discarding) what the client still sends meanwhile.

    Awaiting ``close()`` without reading would stall when the incoming queue is full (a flood):
    the client's close frame would wait behind unread frames until the close timeout.
    """
    closer = asyncio.create_task(ws.close(code, reason))
    try:
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass
    await closer
