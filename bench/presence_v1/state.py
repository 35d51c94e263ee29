"""Pure presence state: a delta-state CRDT of presence entries.

No I/O, no clock reads, no randomness. See ``docs/presence.md`` for the design.

Data model
----------
* A replica is identified by ``Rid = (name, incarnation)``.
* An entry is identified by ``(key, origin, conn)``: ``key`` is the user id,
  ``origin`` the replica that tracks it, ``conn`` the connection id. Only the
  origin replica ever creates, updates or removes its entries.
* Every local operation (track, update, untrack) consumes the next *dot*
  ``(origin, n)`` of the origin's counter. The causal context of a state is a
  version vector ``{origin: n}`` meaning "every event of ``origin`` up to ``n``
  has been applied".
* Two kinds of *parts* move between replicas:

  - :class:`DeltaPart` ``(origin, start, end, events)``: the events of ``origin``
    with dots in ``(start, end]`` (compacted to the last event per entry). It is
    merged only if it *connects*: ``start <= have``; events with ``n <= have``
    are skipped. A part that does not connect is refused and reported as a
    :class:`Gap` (the replica then asks a peer for a transfer).
  - :class:`SlicePart` ``(origin, counter, entries)``: every live entry of
    ``origin`` as of ``counter``. It replaces the local slice if and only if
    ``counter > have`` (observed-remove: an entry of the origin that is absent
    from a newer slice has been removed).

  Per origin the state is therefore a max-semilattice ordered by the counter,
  which makes merge commutative, associative and idempotent, makes a stale or
  duplicated part a no-op (a leave is never undone) and makes add-wins trivial
  (a re-track is a new dot, a later untrack names the entry, not a dot range).
"""

from __future__ import annotations

import builtins
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any, NamedTuple, NoReturn, cast

from presence import _gc

__all__ = [
    "EMPTY_META",
    "DeltaPart",
    "Event",
    "Gap",
    "GapError",
    "MergeResult",
    "Part",
    "Presence",
    "Rid",
    "SlicePart",
    "State",
]

Rid = tuple[str, int]
"""Replica identity: ``(name, incarnation)``."""

Meta = Mapping[str, Any]


class _EmptyMeta(dict[str, Any]):
    """Type of :data:`EMPTY_META`: an empty ``dict`` that refuses to change.

    A ``dict`` subclass rather than a ``MappingProxyType``: msgpack packs it
    natively, while a proxy cost a Python callback per entry (a 100k-entry
    transfer without metas encoded 6 times slower).
    """

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("EMPTY_META is read-only")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse


EMPTY_META: Meta = _EmptyMeta()
"""The meta of entries tracked without one (shared, read-only)."""


class Presence(NamedTuple):
    """One tracked connection, as returned by ``list``.

    ``node`` is the name of the replica that tracks it (without incarnation),
    ``origin`` is its full identity ``(node, incarnation)``. Treat ``meta`` as
    read-only: it is shared with the state.
    """

    key: str
    conn: str
    node: str
    meta: Meta
    origin: Rid


class Event(NamedTuple):
    """One event of an origin: ``meta is None`` means "untracked"."""

    n: int
    key: str
    conn: str
    meta: Meta | None


class DeltaPart(NamedTuple):
    origin: Rid
    start: int
    end: int
    events: tuple[Event, ...]


class SlicePart(NamedTuple):
    origin: Rid
    counter: int
    entries: tuple[tuple[str, str, Meta], ...]


Part = DeltaPart | SlicePart


class Gap(NamedTuple):
    """A delta part of ``origin`` starting after ``start`` while we have ``have``."""

    origin: Rid
    have: int
    start: int
    end: int


class GapError(Exception):
    def __init__(self, gaps: list[Gap]) -> None:
        super().__init__(f"delta does not connect: {gaps!r}")
        self.gaps = gaps


@dataclass(slots=True)
class MergeResult:
    """What a merge (or up/down/purge) changed in the *visible* list."""

    joins: list[Presence] = field(default_factory=list)
    leaves: list[Presence] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    #: origins this state had never seen before the merge
    new_origins: list[Rid] = field(default_factory=list)
    #: origins purged because a newer incarnation of the same name appeared
    superseded: list[Rid] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.joins or self.leaves or self.gaps or self.new_origins or self.superseded)

    def extend(self, other: MergeResult) -> None:
        self.joins += other.joins
        self.leaves += other.leaves
        self.gaps += other.gaps
        self.new_origins += other.new_origins
        self.superseded += other.superseded


_new_tuple = tuple.__new__

Entry = tuple[str, str, str, Meta, Rid]
"""An entry as stored: a plain tuple laid out like :class:`Presence`.

Plain tuples, not ``Presence`` instances: CPython's garbage collector stops
tracking an exact tuple whose items are atomic (strings, ints, a dict of
strings) but never a tuple *subclass* such as a ``NamedTuple``. Stored as
``Presence``, a million entries stayed a million objects to traverse on every
full collection (about 0.1 s each); stored as tuples they leave the collector's
lists after their first collection. ``Presence`` objects are built on the way
out (``list``, joins, leaves), which costs about 50 ns each.
"""

Stored = Entry | tuple[Entry, ...]
"""The value of a key: one entry, or a tuple of entries (several connections)."""

_dot = itemgetter(0)
_first = itemgetter(0)
_key_of = itemgetter(1)
_conn_of = itemgetter(2)
_meta_of = itemgetter(3)
_key_of_entry = itemgetter(0)
_conn_of_entry = itemgetter(1)
_meta_of_entry = itemgetter(2)
_slice_entry = itemgetter(0, 1, 3)  # stored entry -> (key, conn, meta)


def _size_of(parts: Sequence[Part]) -> int:
    n = 0
    for p in parts:
        n += len(p.events) if isinstance(p, DeltaPart) else len(p.entries)
    return n


def _one(v: Stored) -> Entry:
    return cast("Entry", v)


def _many(v: Stored) -> tuple[Entry, ...]:
    return cast("tuple[Entry, ...]", v)


def _presence(e: Entry) -> Presence:
    p: Presence = _new_tuple(Presence, e)
    return p


def _presences(es: Iterable[Entry]) -> builtins.list[Presence]:
    return builtins.list(map(_new_tuple, repeat(Presence), es))


class _Log:
    """Recent events of one origin covering dots ``(base, end]``."""

    __slots__ = ("base", "events")

    def __init__(self, base: int) -> None:
        self.base = base
        self.events: deque[Event] = deque()


def _compact(events: Iterable[Event]) -> tuple[Event, ...]:
    """Keep the last event per ``(key, conn)``, in dot order."""
    last: dict[tuple[str, str], Event] = {}
    for ev in events:
        k = (ev.key, ev.conn)
        last.pop(k, None)  # re-insert so dict order stays dot order
        last[k] = ev
    return tuple(last.values())


class State:
    """The presence set of one replica. Not thread-safe for writers.

    Readers of :meth:`list` on other threads are safe without a lock: the per-key
    values are immutable tuples swapped atomically and the down set is a frozenset.
    """

    __slots__ = (
        "_by_key",
        "_ctx",
        "_down",
        "_logs",
        "_max_inc",
        "_origin_keys",
        "_own_conns",
        "_pending",
        "_pending_start",
        "_purged",
        "_size",
        "log_size",
        "replica",
    )

    def __init__(self, replica: Rid, *, log_size: int = 4096) -> None:
        self.replica: Rid = (str(replica[0]), int(replica[1]))
        self.log_size = log_size
        self._ctx: dict[Rid, int] = {self.replica: 0}
        # key -> one entry, or a tuple of entries; an entry's first item is its
        # key (a str), a tuple of entries' first item is a tuple
        self._by_key: dict[str, Stored] = {}
        # per origin, the keys it has entries under (a dict used as a compact ordered set)
        self._origin_keys: dict[Rid, dict[str, None]] = {}
        # own connection -> its key, or the set of its keys (rare: one conn, several keys)
        self._own_conns: dict[str, str | set[str]] = {}
        self._down: frozenset[Rid] = frozenset()
        self._purged: set[Rid] = set()
        self._max_inc: dict[str, int] = {self.replica[0]: self.replica[1]}
        self._logs: dict[Rid, _Log] = {self.replica: _Log(0)}
        self._pending: builtins.list[Event] = []
        self._pending_start = 0
        self._size = 0

    # ------------------------------------------------------------------ reads

    def __len__(self) -> int:
        """Number of stored entries (visible or hidden)."""
        return self._size

    def list(self, key: str) -> builtins.list[Presence]:
        """Visible entries of ``key`` (entries of down replicas are hidden)."""
        v = self._by_key.get(key)
        if v is None:
            return []
        down = self._down
        if type(v[0]) is str:
            if down and v[4] in down:
                return []
            return [_new_tuple(Presence, v)]
        if down:
            return [_new_tuple(Presence, e) for e in _many(v) if e[4] not in down]
        return _presences(_many(v))

    def list_all(self) -> builtins.list[Presence]:
        """Every visible entry."""
        return _presences(self._iter_visible())

    def _iter_visible(self) -> Iterator[Entry]:
        down = self._down
        for v in builtins.list(self._by_key.values()):
            if type(v[0]) is str:
                if not (down and v[4] in down):
                    yield _one(v)
            else:
                for e in _many(v):
                    if not (down and e[4] in down):
                        yield e

    def _stored(self, origin: Rid) -> builtins.list[Entry]:
        """Every stored entry of ``origin``, as stored."""
        ks = self._origin_keys.get(origin)
        if not ks:
            return []
        by_key = self._by_key
        vals: builtins.list[Any] = builtins.list(map(by_key.get, ks))
        if None not in vals and set(map(type, map(_first, vals))) == {str}:
            # one entry per key: it is the origin's (``_origin_keys`` invariant)
            return cast("builtins.list[Entry]", vals)
        out: builtins.list[Entry] = []
        for v in vals:
            if v is None:
                continue
            if type(v[0]) is str:
                if v[4] == origin:
                    out.append(_one(v))
            else:
                out.extend(e for e in _many(v) if e[4] == origin)
        return out

    def entries_of(self, origin: Rid) -> builtins.list[Presence]:
        """Every stored entry of ``origin`` (even if the origin is down)."""
        return _presences(self._stored(origin))

    def _find(self, key: str, conn: str, origin: Rid) -> Entry | None:
        v = self._by_key.get(key)
        if v is None:
            return None
        for e in (_one(v),) if type(v[0]) is str else _many(v):
            if e[1] == conn and e[4] == origin:
                return e
        return None

    def get(self, key: str, conn: str, origin: Rid | None = None) -> Presence | None:
        """The stored entry ``(key, origin, conn)`` (own replica by default)."""
        e = self._find(key, conn, self.replica if origin is None else origin)
        return None if e is None else _presence(e)

    def clock(self) -> dict[Rid, int]:
        """The causal context: ``{origin: counter}`` of every known, not purged origin."""
        return dict(self._ctx)

    def counter(self, origin: Rid) -> int:
        return self._ctx.get(origin, 0)

    def origins(self) -> builtins.list[Rid]:
        return list(self._ctx)

    @property
    def down(self) -> frozenset[Rid]:
        return self._down

    @property
    def purged(self) -> frozenset[Rid]:
        return frozenset(self._purged)

    def is_purged(self, origin: Rid) -> bool:
        if origin in self._purged:
            return True
        known = self._max_inc.get(origin[0])
        return known is not None and origin[1] < known

    def origin_size(self, origin: Rid) -> int:
        return len(self._stored(origin))

    # --------------------------------------------------------- storage helpers

    def _put(self, e: Entry) -> Entry | None:
        """Store ``e``; returns the entry it replaced (same key, conn and origin)."""
        key = e[0]
        cur = self._by_key.get(key)
        if cur is None:
            self._by_key[key] = e
        elif type(cur[0]) is str:
            if cur[1] == e[1] and cur[4] == e[4]:
                self._by_key[key] = e
                return _one(cur)
            self._by_key[key] = (_one(cur), e)
        else:
            tup = _many(cur)
            for i, q in enumerate(tup):
                if q[1] == e[1] and q[4] == e[4]:
                    self._by_key[key] = (*tup[:i], e, *tup[i + 1 :])
                    return q
            self._by_key[key] = (*tup, e)
        self._size += 1
        ks = self._origin_keys.get(e[4])
        if ks is None:
            self._origin_keys[e[4]] = {key: None}
        else:
            ks[key] = None
        return None

    def _del(self, key: str, conn: str, origin: Rid) -> Entry | None:
        cur = self._by_key.get(key)
        if cur is None:
            return None
        old: Entry | None = None
        still_has_origin = False
        if type(cur[0]) is str:
            if cur[1] == conn and cur[4] == origin:
                del self._by_key[key]
                old = _one(cur)
        else:
            keep: builtins.list[Entry] = []
            for q in _many(cur):
                if old is None and q[1] == conn and q[4] == origin:
                    old = q
                else:
                    keep.append(q)
                    if q[4] == origin:
                        still_has_origin = True
            if old is not None:
                if len(keep) == 1:
                    self._by_key[key] = keep[0]
                else:
                    self._by_key[key] = tuple(keep)
        if old is None:
            return None
        self._size -= 1
        if not still_has_origin:
            ks = self._origin_keys.get(origin)
            if ks is not None:
                ks.pop(key, None)
                if not ks:
                    del self._origin_keys[origin]
        return old

    def _log(self, origin: Rid, ev: Event) -> None:
        log = self._logs.get(origin)
        if log is None:
            return
        log.events.append(ev)
        if len(log.events) > self.log_size:
            log.base = log.events.popleft().n

    # ------------------------------------------------------- local operations

    def _bump(self, key: str, conn: str, meta: Meta | None) -> Event:
        me = self.replica
        n = self._ctx[me] + 1
        self._ctx[me] = n
        ev = Event(n, key, conn, meta)
        self._pending.append(ev)
        self._log(me, ev)
        return ev

    def track(self, key: str, conn: str, meta: Meta | None = None) -> Presence:
        """Track ``conn`` of ``key`` on this replica (an existing entry is updated).

        Tracking an entry that already exists with an equal meta is a no-op.
        """
        m: Meta = meta if meta else EMPTY_META
        me = self.replica
        cur = self._find(key, conn, me)
        if cur is not None and cur[3] == m:
            return _presence(cur)
        self._bump(key, conn, m)
        e: Entry = (key, conn, me[0], m, me)
        self._put(e)
        own = self._own_conns.get(conn)
        if own is None:
            self._own_conns[conn] = key
        elif type(own) is str:
            if own != key:
                self._own_conns[conn] = {own, key}
        else:
            cast("set[str]", own).add(key)
        return _presence(e)

    def update(self, key: str, conn: str, meta: Meta | None) -> Presence | None:
        """Replace the meta of a tracked entry; ``None`` if it is not tracked."""
        if self._find(key, conn, self.replica) is None:
            return None
        return self.track(key, conn, meta)

    def untrack(self, key: str, conn: str) -> Presence | None:
        """Untrack one entry; returns it, or ``None`` (no-op) if it was not tracked."""
        old = self._del(key, conn, self.replica)
        if old is None:
            return None
        self._bump(key, conn, None)
        own = self._own_conns.get(conn)
        if own is not None:
            if type(own) is str:
                if own == key:
                    del self._own_conns[conn]
            else:
                keys = cast("set[str]", own)
                keys.discard(key)
                if not keys:
                    del self._own_conns[conn]
        return _presence(old)

    def untrack_conn(self, conn: str) -> builtins.list[Presence]:
        """Untrack every entry of ``conn`` on this replica."""
        own = self._own_conns.get(conn)
        if own is None:
            return []
        out: builtins.list[Presence] = []
        for key in [own] if type(own) is str else sorted(own):
            p = self.untrack(key, conn)
            if p is not None:
                out.append(p)
        return out

    def has_delta(self) -> bool:
        return bool(self._pending)

    def take_delta(self) -> DeltaPart | None:
        """The pending delta of local operations since the last call (or None)."""
        if not self._pending:
            return None
        me = self.replica
        part = DeltaPart(me, self._pending_start, self._ctx[me], _compact(self._pending))
        self._pending = []
        self._pending_start = self._ctx[me]
        return part

    # ----------------------------------------------------------------- merges

    def _admit(self, origin: Rid, res: MergeResult) -> bool:
        """May parts of ``origin`` be merged? Purges superseded incarnations."""
        if origin == self.replica or origin in self._purged:
            return False
        name, inc = origin
        if name == self.replica[0]:
            # an older life of ourselves (purged) or a newer one (we are stale)
            if inc < self.replica[1]:
                self._purged.add(origin)
            return False
        known = self._max_inc.get(name)
        if known is None:
            self._max_inc[name] = inc
        elif inc < known:
            self._purged.add(origin)
            return False
        elif inc > known:
            old = (name, known)
            if old in self._ctx or old in self._origin_keys:
                res.leaves += self.purge(old).leaves
                res.superseded.append(old)
            else:
                self._purged.add(old)
            self._max_inc[name] = inc
        if origin not in self._ctx:
            self._ctx[origin] = 0
            self._logs[origin] = _Log(0)
            res.new_origins.append(origin)
        return True

    def see(self, origin: Rid) -> MergeResult:
        """Register an origin heard of (e.g. by heartbeat) with an empty context."""
        res = MergeResult()
        self._admit(origin, res)
        return res

    def merge(self, parts: Iterable[Part], *, diffs: bool = True) -> MergeResult:
        """Merge delta and slice parts; non-connecting delta parts go to ``gaps``.

        ``diffs=False`` leaves ``joins`` and ``leaves`` empty (nobody listens to
        them), which saves building one :class:`Presence` per changed entry.
        """
        res = MergeResult()
        parts = parts if isinstance(parts, builtins.list | tuple) else builtins.list(parts)
        with _gc.paused(_size_of(parts) >= _gc.BULK):
            for part in parts:
                if type(part) is DeltaPart:
                    self._merge_delta_part(part, res, diffs)
                else:
                    self._merge_slice(part, res, diffs)  # type: ignore[arg-type]
        return res

    def merge_delta(self, parts: Iterable[Part]) -> MergeResult:
        """Like :meth:`merge` but raises :class:`GapError` if any part has a gap.

        Parts that do connect are merged before the exception is raised.
        """
        res = self.merge(parts)
        if res.gaps:
            raise GapError(res.gaps)
        return res

    def merge_state(self, parts: Iterable[Part]) -> MergeResult:
        """Merge a whole state (as produced by :meth:`extract` with an empty clock)."""
        return self.merge(parts)

    def _merge_delta_part(self, part: DeltaPart, res: MergeResult, diffs: bool) -> None:
        origin = part.origin
        have = self._ctx.get(origin, 0)
        if part.end <= have and origin in self._ctx:
            return
        if not self._admit(origin, res):
            return
        if part.end <= have:
            return
        if part.start > have:
            res.gaps.append(Gap(origin, have, part.start, part.end))
            return
        visible = diffs and origin not in self._down
        log = self._logs.get(origin)
        evs = part.events
        if evs and evs[0].n <= have:
            evs = evs[bisect_right(evs, have, key=_dot) :]
        if evs:
            metas = builtins.list(map(_meta_of, evs))
            if None in metas or not self._insert_new(
                builtins.list(map(_key_of, evs)),
                builtins.list(map(_conn_of, evs)),
                metas,
                origin,
                res.joins if visible else None,
            ):
                self._apply_events(evs, origin, visible, res)
        self._ctx[origin] = part.end
        if log is not None:
            if len(evs) >= self.log_size:
                # the log keeps only the newest events: rebuild it from the part
                keep = evs[len(evs) - self.log_size :] if self.log_size else ()
                log.events = deque(keep)
                log.base = evs[len(evs) - len(keep) - 1].n if len(keep) < len(evs) else have
                if log.base < have:
                    log.base = have
            else:
                log.events.extend(evs)
                while len(log.events) > self.log_size:
                    log.base = log.events.popleft().n

    def _apply_events(
        self, evs: Iterable[Event], origin: Rid, visible: bool, res: MergeResult
    ) -> None:
        """The general (per-event) path of a delta merge."""
        name = origin[0]
        joins, leaves = res.joins, res.leaves
        for _n, key, conn, meta in evs:
            if meta is None:
                old = self._del(key, conn, origin)
                if old is not None and visible:
                    leaves.append(_presence(old))
            else:
                e: Entry = (key, conn, name, meta, origin)
                old = self._put(e)
                if visible:
                    if old is not None:
                        leaves.append(_presence(old))
                    joins.append(_presence(e))

    def _insert_new(
        self,
        keys: builtins.list[str],
        conns: builtins.list[str],
        metas: builtins.list[Any],
        origin: Rid,
        joins: builtins.list[Presence] | None,
    ) -> bool:
        """Bulk insert when every key is new to the state and unique in the batch.

        This is the common shape of a join, a transfer and a big delta. The whole
        batch is then built and indexed by C loops (``zip``/``dict.update``)
        instead of one :meth:`_put` per entry. Returns False (nothing done) when
        the batch does not have that shape; the caller takes the general path.
        """
        by_key = self._by_key
        if not by_key.keys().isdisjoint(keys):
            return False
        if len(keys) > 1 and len(set(keys)) != len(keys):
            return False
        es: builtins.list[Entry] = builtins.list(
            zip(keys, conns, repeat(origin[0]), metas, repeat(origin), strict=False)
        )
        by_key.update(zip(keys, es, strict=True))
        ks = self._origin_keys.get(origin)
        if ks is None:
            self._origin_keys[origin] = dict.fromkeys(keys)
        else:
            ks.update(dict.fromkeys(keys))
        self._size += len(es)
        if joins is not None:
            joins += _presences(es)
        return True

    def _merge_slice(self, part: SlicePart, res: MergeResult, diffs: bool) -> None:
        origin = part.origin
        if origin in self._ctx and part.counter <= self._ctx[origin]:
            return
        if not self._admit(origin, res):
            return
        have = self._ctx[origin]
        if part.counter <= have:
            return
        visible = diffs and origin not in self._down
        ents = part.entries
        if origin not in self._origin_keys:
            # nothing stored for this origin yet (a transfer to a new replica)
            if ents and not self._insert_new(
                builtins.list(map(_key_of_entry, ents)),
                builtins.list(map(_conn_of_entry, ents)),
                builtins.list(map(_meta_of_entry, ents)),
                origin,
                res.joins if visible else None,
            ):
                self._replace_slice(ents, origin, visible, res)
        else:
            self._replace_slice(ents, origin, visible, res)
        self._ctx[origin] = part.counter
        self._logs[origin] = _Log(part.counter)

    def _replace_slice(
        self,
        ents: tuple[tuple[str, str, Meta], ...],
        origin: Rid,
        visible: bool,
        res: MergeResult,
    ) -> None:
        """The general path of a slice merge: diff against what we hold of ``origin``."""
        name = origin[0]
        old_map = {(e[0], e[1]): e for e in self._stored(origin)}
        for key, conn, meta in ents:
            old = old_map.pop((key, conn), None)
            if old is not None and old[3] == meta:
                continue
            e: Entry = (key, conn, name, meta, origin)
            self._put(e)
            if visible:
                if old is not None:
                    res.leaves.append(_presence(old))
                res.joins.append(_presence(e))
        for (key, conn), old in old_map.items():
            self._del(key, conn, origin)
            if visible:
                res.leaves.append(_presence(old))

    # ----------------------------------------------------------- extraction

    def extract(
        self,
        remote_clock: Mapping[Rid, int],
        exclude: Rid | None = None,
        *,
        prefer_delta: bool = True,
    ) -> builtins.list[Part]:
        """The parts a replica with ``remote_clock`` needs to catch up with us.

        Only origins on which the remote lags are included. For each, the
        smallest sufficient form is chosen: a delta from the recent-event log
        when it covers the remote's counter and is smaller than the slice,
        otherwise the whole slice of that origin. ``extract({})`` is the whole
        state. ``exclude`` (the requester itself) is never sent back.
        """
        with _gc.paused(self._size >= _gc.BULK):
            return self._extract(remote_clock, exclude, prefer_delta)

    def _extract(
        self, remote_clock: Mapping[Rid, int], exclude: Rid | None, prefer_delta: bool
    ) -> builtins.list[Part]:
        parts: builtins.list[Part] = []
        for origin, n in list(self._ctx.items()):
            if origin == exclude:
                continue
            rc = remote_clock.get(origin, 0)
            if n <= rc:
                if n == 0 and origin not in remote_clock and origin != exclude:
                    # announce an origin the remote never heard of
                    parts.append(SlicePart(origin, 0, ()))
                continue
            entries = self._stored(origin)
            if prefer_delta and rc > 0:
                log = self._logs.get(origin)
                if log is not None and log.base <= rc:
                    events = _compact(e for e in log.events if e.n > rc)
                    if len(events) <= len(entries):
                        parts.append(DeltaPart(origin, rc, n, events))
                        continue
            parts.append(SlicePart(origin, n, tuple(map(_slice_entry, entries))))
        return parts

    # --------------------------------------------------------- replica status

    def replica_down(self, origin: Rid) -> MergeResult:
        """Hide the entries of ``origin``; returns them as leaves."""
        res = MergeResult()
        if origin == self.replica or origin in self._down:
            return res
        self._down = self._down | {origin}
        res.leaves = self.entries_of(origin)
        return res

    def replica_up(self, origin: Rid) -> MergeResult:
        """Show the entries of ``origin`` again; returns them as joins."""
        res = MergeResult()
        if origin not in self._down:
            return res
        self._down = self._down - {origin}
        res.joins = self.entries_of(origin)
        return res

    def unpurge(self, origin: Rid) -> bool:
        """Allow a purged origin back (it was heard directly again, so it is alive).

        Refused for superseded incarnations. Its entries must then be transferred
        again: nothing of the old slice is kept.
        """
        if origin not in self._purged or self._max_inc.get(origin[0], -1) > origin[1]:
            return False
        self._purged.discard(origin)
        return True

    def purge(self, origin: Rid) -> MergeResult:
        """Permanently forget ``origin``: its entries go and never come back."""
        res = MergeResult()
        if origin == self.replica:
            return res
        was_visible = origin not in self._down
        for e in self._stored(origin):
            self._del(e[0], e[1], origin)
            if was_visible:
                res.leaves.append(_presence(e))
        self._ctx.pop(origin, None)
        self._logs.pop(origin, None)
        self._origin_keys.pop(origin, None)
        if origin in self._down:
            self._down = self._down - {origin}
        self._purged.add(origin)
        name, inc = origin
        if self._max_inc.get(name, -1) < inc:
            self._max_inc[name] = inc
        return res

    # ------------------------------------------------------------- debugging

    def snapshot(self) -> dict[Rid, dict[tuple[str, str], Meta]]:
        """Every stored entry, grouped by origin (for tests and debugging)."""
        out: dict[Rid, dict[tuple[str, str], Meta]] = {}
        for origin in self._ctx:
            out[origin] = {(e[0], e[1]): e[3] for e in self._stored(origin)}
        return out
