"""In-process network with injectable delay, loss, duplication, reordering and partitions.

Two modes:

* ``virtual=True`` (simulation): nothing happens by itself. Frames are queued
  with a due time on the network's virtual clock (``now() + link delay``); the
  driver calls :meth:`MemoryNetwork.deliver_due` with the fake current time.
  A driver that also sends between deliveries (timers, local operations) must
  first move the clock to its current time with :meth:`MemoryNetwork.set_now`,
  or frames are stamped with the time of the last delivery (due in the past).
  Everything is deterministic for a given ``seed``/``rng``.
* ``virtual=False`` (embedded mode, e.g. several :class:`~presence.runtime.PresenceNode`
  in one process): frames without delay are delivered synchronously to the
  receiver's handler; delayed frames are delivered by a daemon thread.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .base import FrameHandler

__all__ = ["LinkPolicy", "MemoryNetwork", "MemoryTransport"]


@dataclass(frozen=True, slots=True)
class LinkPolicy:
    """Behaviour of a directed link. ``jitter`` > 0 reorders frames."""

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("delay", "jitter", "loss", "duplicate"):
            v = getattr(self, name)
            if v < 0 or (name in ("loss", "duplicate") and v > 1):
                raise ValueError(f"{name}: out of range (got {v!r})")


class MemoryTransport:
    def __init__(self, network: MemoryNetwork, name: str, *, listen: bool = True) -> None:
        self.network = network
        self.name = name
        # False: a writer replica (a gateway's, sharded) that hears only what is sent to it.
        self.listen = listen
        self.handler: FrameHandler | None = None
        self.paused = False
        self.closed = False

    def start(self, on_frame: FrameHandler) -> None:
        self.handler = on_frame

    def broadcast(self, frame: bytes) -> None:
        if not self.closed:
            self.network._send(self.name, None, frame)

    def send(self, to: str, frame: bytes) -> None:
        if not self.closed:
            self.network._send(self.name, to, frame)

    def pause(self) -> None:
        """Stop receiving (frames for it are lost) - like unsubscribing."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True
        self.network._detach(self)


class MemoryNetwork:
    def __init__(
        self,
        *,
        seed: int | None = None,
        rng: random.Random | None = None,
        virtual: bool = False,
        default: LinkPolicy | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.rng = rng or random.Random(seed)
        self.virtual = virtual
        self.default = default or LinkPolicy()
        self._clock = clock or time.monotonic
        self.vnow = 0.0
        self._links: dict[tuple[str, str], LinkPolicy] = {}
        self._blocked: set[tuple[str, str]] = set()
        self._nodes: dict[str, MemoryTransport] = {}
        self._heap: list[tuple[float, int, str, bytes]] = []
        self._seq = itertools.count()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.delivered = 0
        self.lost = 0

    # ----------------------------------------------------------- topology

    def transport(self, name: str, *, listen: bool = True) -> MemoryTransport:
        with self._lock:
            t = MemoryTransport(self, name, listen=listen)
            self._nodes[name] = t
            return t

    __call__ = transport  # a MemoryNetwork is a transport factory

    def _detach(self, t: MemoryTransport) -> None:
        with self._lock:
            if self._nodes.get(t.name) is t:
                del self._nodes[t.name]

    def set_link(self, a: str, b: str, policy: LinkPolicy, *, both: bool = True) -> None:
        with self._lock:
            self._links[(a, b)] = policy
            if both:
                self._links[(b, a)] = policy

    def partition(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        """Cut every link between the two groups (both directions)."""
        a, b = list(side_a), list(side_b)
        with self._lock:
            for x in a:
                for y in b:
                    self._blocked.add((x, y))
                    self._blocked.add((y, x))

    def isolate(self, name: str) -> None:
        with self._lock:
            others = [n for n in self._nodes if n != name]
        self.partition([name], others)

    def heal(self) -> None:
        with self._lock:
            self._blocked.clear()

    def now(self) -> float:
        return self.vnow if self.virtual else self._clock()

    def set_now(self, t: float) -> None:
        """Virtual mode: move the clock to ``t`` without delivering anything.

        Frames sent afterwards are due at ``t`` plus their link's delay. The
        clock never goes back (an earlier ``t`` is ignored), as in
        :meth:`deliver_due`. Raises ``ValueError`` in real-time mode, whose
        clock is not ours to set.
        """
        if not self.virtual:
            raise ValueError("set_now: only a virtual MemoryNetwork has a settable clock")
        with self._lock:
            if t > self.vnow:
                self.vnow = t

    # ------------------------------------------------------------ sending

    def _send(self, src: str, dst: str | None, frame: bytes) -> None:
        immediate: list[tuple[MemoryTransport, bytes]] = []
        with self._lock:
            self.sent += 1
            now = self.now()
            targets = ([n for n, t in self._nodes.items() if n != src and t.listen]
                       if dst is None else [dst])
            for name in targets:
                if (src, name) in self._blocked or name not in self._nodes:
                    self.lost += 1
                    continue
                pol = self._links.get((src, name), self.default)
                if pol.loss and self.rng.random() < pol.loss:
                    self.lost += 1
                    continue
                copies = 2 if pol.duplicate and self.rng.random() < pol.duplicate else 1
                for _ in range(copies):
                    lag = pol.delay + (pol.jitter * self.rng.random() if pol.jitter else 0.0)
                    if not self.virtual and lag <= 0:
                        immediate.append((self._nodes[name], frame))
                    else:
                        heapq.heappush(self._heap, (now + lag, next(self._seq), name, frame))
            if self._heap and not self.virtual:
                self._ensure_thread()
                self._cond.notify()
        for t, f in immediate:
            self._deliver(t, f)

    def _deliver(self, t: MemoryTransport, frame: bytes) -> None:
        if t.closed or t.paused or t.handler is None:
            self.lost += 1
            return
        self.delivered += 1
        t.handler(frame)

    # ------------------------------------------------ virtual-time driving

    def next_due(self) -> float | None:
        with self._lock:
            return self._heap[0][0] if self._heap else None

    def pending(self) -> int:
        return len(self._heap)

    def deliver_due(self, now: float) -> int:
        """Virtual mode: set the clock to ``now`` and deliver every frame due by then."""
        n = 0
        with self._lock:
            if now > self.vnow:
                self.vnow = now
        while True:
            with self._lock:
                if not self._heap or self._heap[0][0] > now:
                    return n
                _, _, name, frame = heapq.heappop(self._heap)
                t = self._nodes.get(name)
            if t is None:
                self.lost += 1
                continue
            self._deliver(t, frame)
            n += 1

    def drop_pending(self) -> None:
        with self._lock:
            self.lost += len(self._heap)
            self._heap.clear()

    # ---------------------------------------------------- real-time thread

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="presence-memnet", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait(1.0)
                due = self._heap[0][0]
                wait = due - self.now()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                _, _, name, frame = heapq.heappop(self._heap)
                t = self._nodes.get(name)
            if t is not None:
                self._deliver(t, frame)
