"""Python client for the gateway's wire protocol (docs/protocol.md), asyncio.

    client = DeliveryClient("ws://127.0.0.1:8765/ws", token, dedupe_path="seen.sqlite3")
    async with client:
        await client.run(show)      # show(msg) runs, then the id is recorded, then acked

It sends ``hello``, waits for ``welcome``, hands each ``message`` to the application once,
reconnects with exponential backoff and jitter after a lost connection (the gateway then replays
everything not acked), and stops for good on an authentication failure (close code 1008).

Showing each message once: delivery is at least once, so a copy of a message may come again
(its ack was lost, or a reconnect replays it). The client remembers the ids it has handed over
in a :class:`~delivery.client_dedupe.SeenStore`: in memory by default (the most recent 10,000),
or in a SQLite file that survives restarts (``dedupe_path=``, the most recent 100,000), or any
store passed as ``seen_store=``. A copy of a recorded id is not handed over again, only acked
again (the gateway did not get the first ack). The order is: the application processes the
message, then its id is recorded, then the ack is sent. A crash after the ack is sent changes
nothing; a crash between recording and acking means a replay that is acked without being shown;
the one window left is a crash after the application showed the message and before its id is
recorded (a synchronous write right after the handler returns): then it is shown again.

Conversation order: a message frame with ``conversation``, ``seq`` and ``prev`` goes through an
:class:`~delivery.client_order.OrderBuffer` before the application sees it: a message waits
(unacked) while the one numbered ``prev`` (the previous one addressed to this user) has not
been shown, at most ``order_wait_s`` (default 2 s) after it arrived; then the gap is skipped
(``stats.gaps_skipped``) and a missing message that arrives afterwards is still handed over,
with ``late=True``. The first message of a conversation this client has not shown before is
handed over at once (the client does not know what was shown in an earlier run).

Receipts (``receipt`` frames, to the sender of a message): handed to ``on_receipt`` (plain or
async; recorded and acked after it returns), or without one acked on arrival and queued for
:meth:`DeliveryClient.receive_receipt`. :meth:`DeliveryClient.mark_read` sends a ``read`` frame
(everything up to a seq of a conversation is read); marks made while disconnected, or on a
connection that then dropped, are sent again after the next ``welcome``.

``run(handler)`` (or ``auto_ack=False`` and ``ack(id)`` once shown) acks after the application
processed the message. ``receive()`` and ``async for`` with ``auto_ack=True`` record and ack a
message when they hand it over, before the caller's code runs: fine for tests and tools, but a
crash before the caller shows it leaves it acked and unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from delivery.client_dedupe import (
    FILE_MAX_IDS,
    MEMORY_MAX_IDS,
    MemorySeenStore,
    OrderMarks,
    SeenStore,
    SqliteSeenStore,
)
from delivery.client_order import DEFAULT_WAIT_S, Fed, OrderBuffer, Ready, Skipped

log = logging.getLogger("delivery.client")

TokenSource = str | Callable[[], str | Awaitable[str]]
Handler = Callable[["Message"], Any]  # may return an awaitable
ReceiptHandler = Callable[["Receipt"], Any]  # may return an awaitable
RECEIPT_QUEUE_MAX = 10_000  # receipts kept for receive_receipt() when nobody reads them
READ_MARKS_MAX = 100  # read marks re-sent after a reconnect (within the rate burst)
POLICY_VIOLATION = 1008
TOO_MANY_CONNECTIONS = 4008  # a newer connection of this user took our slot


@dataclass(frozen=True)
class Message:
    id: str
    sender: str
    body: Any
    sent_at: str
    conn: str = ""  # the connection it arrived on
    conversation: str | None = None
    seq: int | None = None  # its place in the conversation (None: a frame without one)
    message: str | None = None  # the sender's message id (receipts name it); ``id`` is ours
    late: bool = False  # arrived after later seqs were shown (its gap was skipped at the bound)


@dataclass(frozen=True)
class Receipt:
    """A ``receipt`` frame: what happened to a message this user sent (docs/protocol.md).
    ``frame`` is the whole frame (a coalesced receipt carries counts, see the protocol)."""

    id: str
    status: str  # "delivered" | "read"
    conversation: str | None
    message: str | None
    user: str | None
    frame: dict[str, Any]


@dataclass
class ClientStats:
    connects: int = 0
    received: int = 0
    duplicates: int = 0
    acks_sent: int = 0
    receipts: int = 0
    reads_sent: int = 0
    held: int = 0  # messages that waited for an earlier seq
    gaps_skipped: int = 0  # gaps given up on at the bound
    late: int = 0  # messages handed over after their gap was skipped
    errors: list[dict[str, Any]] = field(default_factory=list)


class AuthError(RuntimeError):
    """The gateway refused the token (close 1008), or a newer connection of the same user took
    this one's slot (4008): reconnecting would not help."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"gateway closed the connection: {code} {reason}")
        self.code = code
        self.reason = reason


class ClientClosed(RuntimeError):
    pass


_END = object()


class DeliveryClient:
    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        auto_ack: bool = True,
        reconnect: bool = True,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        dedupe_size: int | None = None,
        dedupe_path: str | os.PathLike[str] | None = None,
        seen_store: SeenStore | None = None,
        open_timeout_s: float = 10.0,
        ping_interval_s: float | None = 20.0,
        max_size: int | None = 2**20,
        order_wait_s: float = DEFAULT_WAIT_S,
        on_receipt: ReceiptHandler | None = None,
    ) -> None:
        self.url = url
        self._token = token
        self.auto_ack = auto_ack
        self.reconnect = reconnect
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.open_timeout_s = open_timeout_s
        self.ping_interval_s = ping_interval_s
        self.max_size = max_size
        if dedupe_path is not None and seen_store is not None:
            raise ValueError("pass dedupe_path or seen_store, not both")
        self._owns_store = seen_store is None
        if seen_store is not None:
            self.seen_store: SeenStore = seen_store
        elif dedupe_path is not None:
            self.seen_store = SqliteSeenStore(dedupe_path, dedupe_size or FILE_MAX_IDS)
        else:
            self.seen_store = MemorySeenStore(dedupe_size or MEMORY_MAX_IDS)
        # Handed to the application (or queued for it) but not yet recorded: a copy arriving
        # meanwhile is dropped without an ack (the first copy's ack is still to come).
        self._pending: set[str] = set()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._order: OrderBuffer[Message] = OrderBuffer(order_wait_s)
        self._places: dict[str, tuple[str, int]] = {}  # handed over: id -> conversation, seq
        if isinstance(self.seen_store, OrderMarks):
            try:
                for conversation, seq in self.seen_store.last_seqs().items():
                    self._order.resume(conversation, seq)
            except Exception:  # then the first message of each conversation may wait
                log.warning("delivery client: could not read the order marks", exc_info=True)
        self._order_timer: asyncio.TimerHandle | None = None
        self.on_receipt = on_receipt
        self._receipts: asyncio.Queue[Receipt] = asyncio.Queue()
        self._receipt_ids = MemorySeenStore(MEMORY_MAX_IDS)
        self._receipt_pending: set[str] = set()
        self._receipt_tasks: set[asyncio.Task[None]] = set()
        self._reads_to_send: dict[str, int] = {}  # since the last welcome: re-sent after one
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._welcomed = asyncio.Event()
        self._closing = False
        self._fatal: BaseException | None = None
        self.conn_id: str | None = None
        self.user: str | None = None
        self.stats = ClientStats()
        self.close_code: int | None = None
        self.close_reason: str = ""

    # -- lifecycle ------------------------------------------------------------------------------

    async def connect(self, timeout: float | None = None) -> DeliveryClient:
        """Start the connection loop and wait for the first ``welcome``."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run())
        waiter = asyncio.create_task(self._welcomed.wait())
        try:
            await asyncio.wait(
                {waiter, self._runner}, timeout=timeout or self.open_timeout_s,
                return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self._fatal is not None:
            raise self._fatal
        if not self._welcomed.is_set():
            raise TimeoutError(f"no welcome from {self.url}")
        return self

    async def close(self) -> None:
        self._closing = True
        if self._order_timer is not None:
            self._order_timer.cancel()
        ws = self._ws
        if ws is not None:
            await ws.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        self._queue.put_nowait(_END)
        if self._owns_store and isinstance(self.seen_store, SqliteSeenStore):
            self.seen_store.close()  # releases the file; a late record reopens it

    async def __aenter__(self) -> DeliveryClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._welcomed.is_set()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._welcomed.wait(), timeout)

    # -- receiving --------------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        msg = await self._next()
        if self.auto_ack:
            await self.ack(msg.id)
        return msg

    async def _next(self) -> Message:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)
            if self._fatal is not None:
                raise self._fatal
            raise StopAsyncIteration
        msg: Message = item
        return msg

    async def run(self, handler: Handler) -> None:
        """Call ``handler(msg)`` (plain or async) for each message, in order; after it returns,
        record the id and ack it. Returns when the client is closed (or stops reconnecting);
        raises :class:`AuthError` if the gateway refused the token. If the handler raises, the
        message is neither recorded nor acked (it comes again after the next reconnect or
        restart) and the exception propagates."""
        while True:
            try:
                msg = await self._next()
            except StopAsyncIteration:
                return
            try:
                result = handler(msg)
                if inspect.isawaitable(result):
                    await result
            except BaseException:
                self._pending.discard(msg.id)
                self._places.pop(msg.id, None)
                raise
            # No await between the handler's return and the record: the window in which a
            # crash shows the message twice is this one synchronous write.
            self._record(msg.id)
            await self._send_ack(msg.id)

    async def receive(self, timeout: float | None = None) -> Message:
        """The next message (``asyncio.TimeoutError`` after ``timeout`` seconds)."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def ack(self, msg_id: str) -> bool:
        """The application has the message: record its id as seen, then ack it on the current
        connection. False if not connected (a replay will be acked again, not shown)."""
        self._record(msg_id)
        return await self._send_ack(msg_id)

    def _record(self, msg_id: str) -> None:
        # A store that fails (disk full, file locked) must not stop acks: the worst outcome is
        # then a message shown twice, never one held back.
        place = self._places.pop(msg_id, None)
        try:
            self.seen_store.add(msg_id)
            if place is not None and isinstance(self.seen_store, OrderMarks):
                self.seen_store.mark_seq(*place)
        except Exception:
            log.warning("delivery client: could not record message %s as seen", msg_id,
                        exc_info=True)
        self._pending.discard(msg_id)

    def _was_seen(self, msg_id: str) -> bool:
        try:
            return self.seen_store.seen(msg_id)
        except Exception:  # unknown, so show it: a duplicate rather than a loss
            log.warning("delivery client: could not look up message %s", msg_id, exc_info=True)
            return False

    async def _send_ack(self, msg_id: str) -> bool:
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(json.dumps({"type": "ack", "id": msg_id}))
        except ConnectionClosed:
            return False
        self.stats.acks_sent += 1
        return True

    async def send_raw(self, frame: str | dict[str, Any]) -> None:
        """Send any frame (tests, keepalive ``{"type": "ping"}``)."""
        if self._ws is None:
            raise ClientClosed("not connected")
        await self._ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    # -- connection loop ----------------------------------------------------------------------

    async def _get_token(self) -> str:
        if isinstance(self._token, str):
            return self._token
        value = self._token()
        if inspect.isawaitable(value):
            value = await value
        return str(value)

    async def _run(self) -> None:
        delay = self.backoff_initial_s
        try:
            while not self._closing:
                try:
                    welcomed = await self._session()
                except AuthError as exc:
                    self._fatal = exc
                    return
                except (OSError, InvalidHandshake, InvalidURI, TimeoutError,
                        ConnectionClosed) as exc:
                    log.info("delivery client: connection to %s failed: %s", self.url, exc)
                    welcomed = False
                if self._closing or not self.reconnect:
                    return
                if welcomed:
                    delay = self.backoff_initial_s
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(self.backoff_max_s, delay * 2)
        finally:
            self._ws = None
            self._welcomed.clear()
            self._queue.put_nowait(_END)

    async def _session(self) -> bool:
        """One connection: hello, welcome, then frames until it closes. True if welcomed."""
        token = await self._get_token()
        async with connect(
            self.url, open_timeout=self.open_timeout_s, ping_interval=self.ping_interval_s,
            max_size=self.max_size, compression=None,
        ) as ws:
            await ws.send(json.dumps({"type": "hello", "token": token}))
            welcomed = False
            try:
                async for raw in ws:
                    frame = json.loads(raw)
                    ftype = frame.get("type")
                    if ftype == "welcome":
                        self.conn_id, self.user = frame["conn"], frame["user"]
                        self._ws = ws
                        welcomed = True
                        self.stats.connects += 1
                        self._welcomed.set()
                        await self._resend_reads()
                    elif ftype == "message":
                        await self._on_message(frame)
                    elif ftype == "receipt":
                        await self._on_receipt(frame)
                    elif ftype == "error":
                        self.stats.errors.append(frame)
                        log.warning("delivery client: gateway error %s: %s",
                                    frame.get("code"), frame.get("message"))
            except ConnectionClosed:
                pass
            finally:
                self._ws = None
                self._welcomed.clear()
            self.close_code = ws.close_code
            self.close_reason = ws.close_reason or ""
            if self.close_code == POLICY_VIOLATION and not welcomed:
                raise AuthError(self.close_code, self.close_reason)
            if self.close_code == TOO_MANY_CONNECTIONS:
                # Reconnecting would close another connection of ours, which would do the same.
                raise AuthError(self.close_code, self.close_reason)
            return welcomed

    async def _on_message(self, frame: dict[str, Any]) -> None:
        msg_id = str(frame.get("id"))
        self.stats.received += 1
        if msg_id in self._pending:
            self.stats.duplicates += 1  # the first copy is still with the application
            return
        if self._was_seen(msg_id):
            self.stats.duplicates += 1
            await self._send_ack(msg_id)  # our earlier ack was lost: say it again
            return
        conversation, seq = frame.get("conversation"), frame.get("seq")
        msg = Message(
            id=msg_id, sender=str(frame.get("from", "")), body=frame.get("body"),
            sent_at=str(frame.get("sent_at", "")), conn=self.conn_id or "",
            conversation=conversation if isinstance(conversation, str) else None,
            seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
            message=str(frame.get("message", msg_id)))
        if msg.conversation is None or msg.seq is None:
            self._pending.add(msg_id)
            self._queue.put_nowait(msg)
            return
        prev = frame.get("prev")
        if not isinstance(prev, int) or isinstance(prev, bool) or not 0 <= prev < msg.seq:
            prev = msg.seq - 1  # no usable prev: the conversation's seqs are gap-free
        fed = self._order.feed(msg.conversation, msg.seq, prev, msg,
                               asyncio.get_running_loop().time())
        if fed.status == "duplicate":
            if self._order.is_held(msg.conversation, msg.seq):
                self.stats.duplicates += 1  # a copy of one waiting for its prev
                return
            # Its seq was handed over before, yet its id is not recorded: the handler failed
            # (or the dedupe store forgot it). Hand it over again rather than lose it.
            fed = Fed("ready", [Ready(msg.conversation, msg.seq, msg, True)])
        self._pending.add(msg_id)
        if fed.status == "held":
            self.stats.held += 1
        self._present(fed.out)
        self._arm_order_timer()

    def _present(self, out: list[Ready[Message] | Skipped]) -> None:
        for item in out:
            if isinstance(item, Ready):
                msg = item.item
                if item.late:
                    self.stats.late += 1
                    msg = replace(msg, late=True)
                self._queue.put_nowait(msg)
                if msg.conversation is not None and msg.seq is not None:
                    self._places[msg.id] = (msg.conversation, msg.seq)
            else:
                self.stats.gaps_skipped += 1
                log.info("delivery client: conversation %s: seqs %d..%d not received within "
                         "%.1f s, shown without them", item.conversation, item.first, item.last,
                         self._order.wait_s)

    def _arm_order_timer(self) -> None:
        if self._order_timer is not None:
            self._order_timer.cancel()
            self._order_timer = None
        deadline = self._order.next_deadline()
        if deadline is not None and not self._closing:
            self._order_timer = asyncio.get_running_loop().call_at(deadline, self._order_tick)

    def _order_tick(self) -> None:
        self._order_timer = None
        self._present(self._order.tick(asyncio.get_running_loop().time()))
        self._arm_order_timer()

    # -- receipts and read marks ----------------------------------------------------------------

    async def _on_receipt(self, frame: dict[str, Any]) -> None:
        rid = str(frame.get("id"))
        self.stats.receipts += 1
        if rid in self._receipt_pending:
            return
        if self._receipt_ids.seen(rid):
            await self._send_ack(rid)  # our earlier ack was lost
            return

        def opt(key: str) -> str | None:
            value = frame.get(key)
            return value if isinstance(value, str) else None

        receipt = Receipt(id=rid, status=str(frame.get("status", "")),
                          conversation=opt("conversation"), message=opt("message"),
                          user=opt("user"), frame=frame)
        if self.on_receipt is None:
            # Nobody may be reading: ack now, keep the most recent for receive_receipt().
            self._receipt_ids.add(rid)
            await self._send_ack(rid)
            if self._receipts.qsize() >= RECEIPT_QUEUE_MAX:
                self._receipts.get_nowait()
            self._receipts.put_nowait(receipt)
            return
        self._receipt_pending.add(rid)
        task = asyncio.create_task(self._handle_receipt(self.on_receipt, receipt))
        self._receipt_tasks.add(task)
        task.add_done_callback(self._receipt_tasks.discard)

    async def _handle_receipt(self, handler: ReceiptHandler, receipt: Receipt) -> None:
        try:
            result = handler(receipt)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.warning("delivery client: receipt handler failed; receipt %s not acked "
                        "(it comes again after a reconnect)", receipt.id, exc_info=True)
            return
        finally:
            self._receipt_pending.discard(receipt.id)
        self._receipt_ids.add(receipt.id)
        await self._send_ack(receipt.id)

    async def receive_receipt(self, timeout: float | None = None) -> Receipt:
        """The next receipt (without ``on_receipt``; ``asyncio.TimeoutError`` after
        ``timeout`` seconds). It was acked when it arrived."""
        return await asyncio.wait_for(self._receipts.get(), timeout)

    def resume_conversation(self, conversation: str, last_seq: int) -> None:
        """The application showed ``conversation`` up to ``last_seq`` before (an earlier run,
        or another client object): messages after it wait for their ``prev`` from there, and
        an earlier one arriving now is handed over ``late``. Call before :meth:`connect`."""
        self._order.resume(conversation, last_seq)

    async def mark_read(self, conversation: str, seq: int) -> bool:
        """Tell the senders that everything up to ``seq`` of ``conversation`` was read. False if
        not connected now: the mark is sent after the next ``welcome``."""
        if not isinstance(conversation, str) or not conversation:
            raise ValueError("conversation must be a non-empty string")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError("seq must be a positive integer")
        if seq > self._reads_to_send.get(conversation, 0):
            self._reads_to_send.pop(conversation, None)
            self._reads_to_send[conversation] = seq
            while len(self._reads_to_send) > READ_MARKS_MAX:
                del self._reads_to_send[next(iter(self._reads_to_send))]
        return await self._send_read(conversation, seq)

    async def _send_read(self, conversation: str, seq: int) -> bool:
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(json.dumps({"type": "read", "conversation": conversation, "seq": seq}))
        except ConnectionClosed:
            return False
        self.stats.reads_sent += 1
        return True

    async def _resend_reads(self) -> None:
        # A read frame has no answer: one sent on a connection that then dropped may be lost,
        # so the marks made since the previous welcome go again (a repeated mark changes
        # nothing on the server).
        # Once: a mark made on this connection joins the (empty) set again.
        marks, self._reads_to_send = self._reads_to_send, {}
        for conversation, seq in marks.items():
            await self._send_read(conversation, seq)
