"""Records client acks in the store, in the batches :class:`~.ack_batcher.AckBatcher` decides.

The asyncio shell of the batcher: the batch-window and retry timer, one task per batch, the
counters, delivery metrics and the ``on_ack`` hook. The store call itself is injected
(``record``: rows and a time -> which acks won), so this module holds no SQL.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from delivery import metrics
from delivery.clock import utcnow
from delivery.gateway.ack_batcher import AckBatcher, AckStep
from delivery.runtime import Hooks

log = logging.getLogger("delivery.gateway")

# An ack waiting to be recorded: message uuid, user, conn, message id, and for metrics the
# dispatch->ack time and attempt of the routing frame acked (None: replayed frame).
AckItem = tuple[uuid.UUID, str, str, str, float | None, int | None]
AckRow = tuple[uuid.UUID, str, str]  # what the store records: message, user, conn
RecordAcks = Callable[[list[AckRow], datetime], Awaitable[list[bool]]]


class AckRecorder:
    """Queue acks with :meth:`queue`; :meth:`flush_all` on stop. Must run on the loop."""

    def __init__(self, node: str, batcher: AckBatcher[AckItem], record: RecordAcks,
                 stats: dict[str, int], hooks: Hooks) -> None:
        self.node = node
        self.batcher = batcher
        self._record = record
        self._stats = stats  # the gateway's counters (acks, ack_batches, ack_retries, ...)
        self._hooks = hooks  # the runtime's: ``on_ack`` is read per batch
        self._timer: asyncio.TimerHandle | None = None  # batch window or retry backoff
        self._flushes: set[asyncio.Task[None]] = set()  # batches being recorded

    @property
    def pending(self) -> list[AckItem]:
        """The acks waiting to be recorded (oldest first)."""
        return self.batcher.pending

    def queue(self, msg_uuid: uuid.UUID, user: str, conn_id: str, msg_id: str,
              latency: float | None = None, attempt: int | None = None) -> None:
        step = self.batcher.add((msg_uuid, user, conn_id, msg_id, latency, attempt))
        if step is AckStep.ARM:
            self._timer = asyncio.get_running_loop().call_later(
                self.batcher.batch_s, self._start)
        elif step is AckStep.FLUSH:
            self._start()

    def _start(self) -> None:
        """The batch window (or a retry backoff) ended: record what the batcher hands out."""
        self._timer = None
        self._launch(self.batcher.start())

    def _launch(self, batches: list[list[AckItem]]) -> None:
        for batch in batches:
            task = asyncio.create_task(self._flush(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flush_done)

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._launch(self.batcher.finished())

    async def _flush(self, batch: list[AckItem]) -> None:
        rows = [(u, user, conn_id) for u, user, conn_id, _, _, _ in batch]
        t0 = time.perf_counter()
        try:
            won = await self._record(rows, utcnow())
        except Exception as exc:
            self._retry(batch, exc)
            return
        self.batcher.recorded()
        stats = self._stats
        stats["acks"] += len(rows)
        stats["acks_won"] += sum(won)
        stats["ack_batches"] += 1
        stats["ack_flush_us"] += int((time.perf_counter() - t0) * 1e6)
        for (_, _, _, _, latency, attempt), w in zip(batch, won, strict=True):
            if w:
                metrics.record_delivered(latency, attempt)
        hook = self._hooks.on_ack
        if hook is not None:
            for (_, _, conn_id, msg_id, _, _), w in zip(batch, won, strict=True):
                try:
                    hook(msg_id, conn_id, w)
                except Exception:
                    log.exception("gateway %s: on_ack hook failed", self.node)

    def _retry(self, batch: list[AckItem], exc: BaseException) -> None:
        """A batch failed to commit (database down, statement timeout): the batcher keeps its
        acks (bounded by ``max_pending_acks``; the dropped ones' messages stay unacked in the
        store, are sent again and acked again: never lost); retry after its backoff."""
        retry = self.batcher.failed(batch)
        self._stats["acks_dropped"] += retry.dropped
        self._stats["ack_retries"] += 1
        log.warning("gateway %s: recording %d acks failed (%s); retrying in %.1fs",
                    self.node, len(batch), type(exc).__name__, retry.delay)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(retry.delay, self._start)

    async def flush_all(self, timeout: float) -> None:
        """On stop: record every waiting ack now, retrying failed batches until ``timeout``
        (what is still unrecorded then is re-sent to the client on its next connection)."""
        deadline = asyncio.get_running_loop().time() + timeout
        batcher = self.batcher
        while batcher.pending or self._flushes:
            if self._timer is not None:
                self._timer.cancel()
            self._start()
            if self._flushes:
                await asyncio.wait(list(self._flushes))
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                if batcher.pending:
                    log.warning("gateway %s: %d acks unrecorded at stop", self.node,
                                len(batcher.pending))
                return
            if batcher.pending and batcher.retry_s:
                await asyncio.sleep(min(batcher.retry_s, left))
