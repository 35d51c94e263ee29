"""Per-conversation order for the clients: a pure core (no I/O, no clock of its own).

Each ``message`` frame of a conversation carries ``seq`` (strictly increasing and gap-free over
the conversation) and ``prev``, the seq of the previous message of the conversation addressed
to this user (0: none; a user does not receive its own messages nor those sent while it was
not a member, so its seqs have holes). A client may receive them out of order (a message whose
first attempt missed the connection comes again after later ones; replay and live delivery
interleave), and may never receive some (another device of the same user acked it).
:class:`OrderBuffer` is fed frames as they arrive and answers what to present now:

- a frame whose ``prev`` is already presented (or 0) is presented at once, followed by any held
  frames that now follow on;
- otherwise it is **held** while the one numbered ``prev`` is missing, for at most ``wait_s``
  after it arrived; at that bound the gap is **skipped** (reported as :class:`Skipped`: the
  seqs between the last presented and the held frame, where the missing ones lie) and the
  held frames are presented in seq order;
- a skipped seq that arrives afterwards is still presented, once, flagged ``late`` (never
  dropped: it is a message the user has not seen; a UI places it by its seq);
- a seq already presented or already held is a duplicate (the caller acks it again, as for a
  copy of a message id it has shown);
- a conversation the buffer knows nothing about starts before its first message: a frame
  with ``prev`` 0 (the first addressed to this user) is presented at once, any other waits for
  its ``prev`` like any frame. A client that showed part of the conversation in an earlier run
  says so with :meth:`OrderBuffer.resume` (the clients keep the last seq shown per
  conversation), so a restart does not wait for messages already shown; seqs at or below that
  point arriving later are presented ``late`` (the caller's id dedupe drops those it showed).

The caller owns the clock: it passes ``now`` (any monotonic seconds) to :meth:`feed` and
:meth:`tick`, and calls :meth:`tick` at :meth:`next_deadline`. Nothing is held past its bound.
The browser client (``delivery/static/client.js``, ``OrderBuffer``) implements the same rules;
tests/delivery/gateway/test_browser_order.py runs both on the same inputs.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Generic, Literal, NamedTuple, TypeVar

T = TypeVar("T")

DEFAULT_WAIT_S = 2.0
# Skipped ranges remembered per conversation (to tell a late arrival from a duplicate); past
# this, the oldest are forgotten and seqs below them count as "before the start" (presented
# late if they come; the caller's id dedupe still drops copies it has shown).
MAX_HOLES = 64
MAX_EARLY = 1024  # seqs below the start presented late, remembered per conversation
DEFAULT_MAX_HELD = 1000  # per conversation; past it the oldest gap is skipped at once


class Ready(NamedTuple, Generic[T]):
    """Present this frame now."""

    conversation: str
    seq: int
    item: T
    late: bool = False  # below a gap skipped earlier (or before the start): shown out of order


class Skipped(NamedTuple):
    """A gap given up on at the bound: the missing message(s) of ``conversation`` lie within
    seqs ``first``..``last`` (not every seq there was addressed to this user)."""

    conversation: str
    first: int
    last: int


Out = Ready[T] | Skipped
Status = Literal["ready", "held", "duplicate"]


@dataclass(frozen=True)
class Fed(Generic[T]):
    """What :meth:`OrderBuffer.feed` decided for one frame, and what to present now."""

    status: Status
    out: list[Ready[T] | Skipped]


@dataclass
class _Conversation(Generic[T]):
    last: int  # highest seq presented in order (or the starting point)
    floor: int  # seqs <= floor are not tracked
    holes: list[tuple[int, int]] = field(default_factory=list)  # skipped, sorted, disjoint
    early: dict[int, None] = field(default_factory=dict)  # presented late, below floor (FIFO)
    held: dict[int, tuple[int, T, float]] = field(default_factory=dict)  # seq: prev, item, due


class OrderBuffer(Generic[T]):
    def __init__(self, wait_s: float = DEFAULT_WAIT_S, *, max_held: int = DEFAULT_MAX_HELD,
                 max_holes: int = MAX_HOLES) -> None:
        if not wait_s >= 0:
            raise ValueError("wait_s must be >= 0")
        if max_held < 1 or max_holes < 1:
            raise ValueError("max_held and max_holes must be >= 1")
        self.wait_s = wait_s
        self.max_held = max_held
        self.max_holes = max_holes
        self._convs: dict[str, _Conversation[T]] = {}

    # -- queries ----------------------------------------------------------------------------

    def last_presented(self, conversation: str) -> int | None:
        conv = self._convs.get(conversation)
        return None if conv is None else conv.last

    def held(self) -> int:
        return sum(len(c.held) for c in self._convs.values())

    def is_held(self, conversation: str, seq: int) -> bool:
        conv = self._convs.get(conversation)
        return conv is not None and seq in conv.held

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to release (None: nothing is held)."""
        best: float | None = None
        for conv in self._convs.values():
            for _, _, deadline in conv.held.values():
                if best is None or deadline < best:
                    best = deadline
        return best

    # -- events -----------------------------------------------------------------------------

    def resume(self, conversation: str, last_seq: int) -> None:
        """Everything up to ``last_seq`` was presented before (e.g. in an earlier run)."""
        conv = self._convs.get(conversation)
        if conv is None:
            self._convs[conversation] = _Conversation(last=last_seq, floor=last_seq)
        elif last_seq > conv.last and not conv.held:
            conv.last = last_seq

    def feed(self, conversation: str, seq: int, prev: int, item: T, now: float) -> Fed[T]:
        """One frame: ``seq`` and ``prev`` as on the wire (``prev`` is ``seq - 1`` for a
        producer that sends none)."""
        conv = self._convs.get(conversation)
        if conv is None:  # nothing shown yet: it starts before seq 1
            conv = self._convs[conversation] = _Conversation(last=0, floor=0)
        if seq <= conv.last:
            if seq <= conv.floor:
                if seq in conv.early:
                    return Fed("duplicate", [])
                conv.early[seq] = None
                if len(conv.early) > MAX_EARLY:
                    del conv.early[next(iter(conv.early))]
                return Fed("ready", [Ready(conversation, seq, item, True)])
            if _take_from_holes(conv.holes, seq):
                return Fed("ready", [Ready(conversation, seq, item, True)])
            return Fed("duplicate", [])
        if seq in conv.held:
            return Fed("duplicate", [])
        if prev <= conv.last:
            out: list[Ready[T] | Skipped] = [Ready(conversation, seq, item)]
            conv.last = seq
            self._drain(conversation, conv, out)
            return Fed("ready", out)
        conv.held[seq] = (prev, item, now + self.wait_s)
        out = []
        if len(conv.held) > self.max_held:
            self._release_through(conversation, conv, min(conv.held), out)
        return Fed("held", out)

    def tick(self, now: float) -> list[Ready[T] | Skipped]:
        """Release every held frame whose bound has passed (and all before it, in order)."""
        out: list[Ready[T] | Skipped] = []
        for name, conv in self._convs.items():
            due = [seq for seq, (_, _, deadline) in conv.held.items() if deadline <= now]
            if due:
                self._release_through(name, conv, max(due), out)
        return out

    # -- internals ----------------------------------------------------------------------------

    def _release_through(self, name: str, conv: _Conversation[T], top: int,
                         out: list[Ready[T] | Skipped]) -> None:
        """Present every held seq <= top in order, skipping the gaps between them."""
        for seq in sorted(s for s in conv.held if s <= top):
            prev, item, _ = conv.held.pop(seq)
            if seq <= conv.last:  # passed by a frame whose prev skipped it (a server bug)
                out.append(Ready(name, seq, item, True))
                continue
            if prev > conv.last:
                out.append(Skipped(name, conv.last + 1, seq - 1))
                self._add_hole(conv, conv.last + 1, seq - 1)
            out.append(Ready(name, seq, item))
            conv.last = seq
        self._drain(name, conv, out)

    def _drain(self, name: str, conv: _Conversation[T], out: list[Ready[T] | Skipped]) -> None:
        # Only the lowest held seq can follow on: any later one's prev is at least that seq.
        while conv.held:
            seq = min(conv.held)
            prev, item, _ = conv.held[seq]
            if prev > conv.last:
                return
            del conv.held[seq]
            if seq <= conv.last:  # passed by a frame whose prev skipped it (a server bug)
                out.append(Ready(name, seq, item, True))
                continue
            conv.last = seq
            out.append(Ready(name, seq, item))

    def _add_hole(self, conv: _Conversation[T], first: int, last: int) -> None:
        conv.holes.append((first, last))  # above every earlier hole: the list stays sorted
        if len(conv.holes) > self.max_holes:
            _, forgotten_last = conv.holes.pop(0)
            conv.floor = max(conv.floor, forgotten_last)


def _take_from_holes(holes: list[tuple[int, int]], seq: int) -> bool:
    """If ``seq`` lies in a hole, remove it from the hole (splitting it) and say so."""
    i = bisect.bisect_right(holes, seq, key=lambda hole: hole[0]) - 1
    if i < 0:
        return False
    first, last = holes[i]
    if not first <= seq <= last:
        return False
    parts = [(a, b) for a, b in ((first, seq - 1), (seq + 1, last)) if a <= b]
    holes[i:i + 1] = parts
    return True
