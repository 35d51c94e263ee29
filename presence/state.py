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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import gt, is_, itemgetter
from types import NoneType
from typing import Any, NamedTuple, NoReturn, cast

from . import _gc

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
"""An entry laid out like :class:`Presence`: ``(key, conn, node, meta, origin)``."""

Row = tuple[str, str, Meta]
"""An entry of a known origin: ``(key, conn, meta)`` (the layout of a slice)."""

_dot = itemgetter(0)
_key_of = itemgetter(1)
_conn_of = itemgetter(2)
_meta_of = itemgetter(3)
_key_of_row = itemgetter(0)
_conn_of_row = itemgetter(1)
_meta_of_row = itemgetter(2)

# Metas whose values are all of these types are interned (shared by equal metas);
# ``1 == True`` but they stay apart because the value types are part of the key.
_ATOMIC = frozenset({str, int, float, bool, NoneType, bytes})
_INTERN_MAX = 4096


class _Table(dict[str, Any]):
    """The entries of one origin, by key.

    A value is the connection id (the entry's meta is the table's ``meta``, the
    common case: no dict or tuple per entry), a ``(conn, meta)`` pair, or a
    tuple of such pairs when the origin has several connections of the key.
    """

    __slots__ = ("meta", "name", "origin", "size")

    def __init__(self, origin: Rid, meta: Meta) -> None:
        super().__init__()
        self.origin = origin
        self.name = origin[0]
        self.meta = meta  # the meta of entries stored as a bare connection id
        self.size = 0  # entries (several per key when a key has several connections)

    def pairs(self, v: Any) -> builtins.list[tuple[str, Meta]]:
        """The ``(conn, meta)`` pairs of the value ``v`` of one key."""
        if type(v) is str:
            return [(v, self.meta)]
        if type(v[0]) is str:
            return [v]
        return builtins.list(v)

    def value(self, pairs: builtins.list[tuple[str, Meta]]) -> Any:
        if len(pairs) > 1:
            return tuple(pairs)
        conn, meta = pairs[0]
        # by identity (metas are interned): an equal meta of other value types
        # (``{"v": 1}`` / ``{"v": True}``) keeps its own object
        return conn if meta is self.meta else (conn, meta)

    def rows(self) -> builtins.list[Row]:
        """Every entry as ``(key, conn, meta)``; C loops when no key has several."""
        vals = builtins.list(self.values())
        if not vals or set(map(type, vals)) == {str}:
            return builtins.list(zip(self.keys(), vals, repeat(self.meta), strict=False))
        out: builtins.list[Row] = []
        for key, v in self.items():
            if type(v) is str:
                out.append((key, v, self.meta))
            elif type(v[0]) is str:
                out.append((key, v[0], v[1]))
            else:
                out.extend((key, c, m) for c, m in v)
        return out

    def presences(self, rows: Iterable[Row]) -> builtins.list[Presence]:
        ks, cs, ms = zip(*rows, strict=True) if rows else ((), (), ())
        return self.columns_presences(ks, cs, ms)

    def columns_presences(
        self, keys: Iterable[str], conns: Iterable[str], metas: Iterable[Meta]
    ) -> builtins.list[Presence]:
        rows = zip(keys, conns, repeat(self.name), metas, repeat(self.origin), strict=False)
        return builtins.list(map(_new_tuple, repeat(Presence), rows))


Indexed = _Table | tuple[_Table, ...]
"""The value of a key in the index: the table of its origin, or of each of its origins."""


def _size_of(parts: Sequence[Part]) -> int:
    n = 0
    for p in parts:
        n += len(p.events) if isinstance(p, DeltaPart) else len(p.entries)
    return n


def _presence(e: Entry) -> Presence:
    p: Presence = _new_tuple(Presence, e)
    return p


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

    Readers of :meth:`list` on other threads are safe without a lock: every
    write replaces a value in one dict (atomic), a reader that finds a key
    in the index but not (yet, or any more) in its origin's table skips it,
    and the down set is a frozenset.

    Storage (per-origin tables, no object per entry in the common case):
    ``_tabs[origin]`` maps each key to its connection id (see :class:`_Table`),
    and ``_by_key[key]`` is the table of the key's origin (a shared object, so
    it costs one dict slot), or a tuple of tables when several origins hold it.
    """

    __slots__ = (
        "_by_key",
        "_ctx",
        "_down",
        "_interned",
        "_logs",
        "_max_inc",
        "_own_conns",
        "_pending",
        "_pending_start",
        "_purged",
        "_size",
        "_tabs",
        "log_size",
        "replica",
    )

    def __init__(self, replica: Rid, *, log_size: int = 4096) -> None:
        self.replica: Rid = (str(replica[0]), int(replica[1]))
        self.log_size = log_size
        self._ctx: dict[Rid, int] = {self.replica: 0}
        self._by_key: dict[str, Indexed] = {}
        self._tabs: dict[Rid, _Table] = {}
        # own connection -> its key, or the set of its keys (rare: one conn, several keys)
        self._own_conns: dict[str, str | set[str]] = {}
        self._down: frozenset[Rid] = frozenset()
        self._purged: set[Rid] = set()
        self._max_inc: dict[str, int] = {self.replica[0]: self.replica[1]}
        self._logs: dict[Rid, _Log] = {self.replica: _Log(0)}
        self._pending: builtins.list[Event] = []
        self._pending_start = 0
        self._size = 0
        self._interned: dict[Any, Meta] = {}

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
        if type(v) is _Table:
            if down and v.origin in down:
                return []
            c = v.get(key)
            if type(c) is str:
                return [_new_tuple(Presence, (key, c, v.name, v.meta, v.origin))]
            return [] if c is None else self._expand(key, v, c)
        out: builtins.list[Presence] = []
        for tab in cast("tuple[_Table, ...]", v):
            if not (down and tab.origin in down):
                c = tab.get(key)
                if c is not None:
                    out += self._expand(key, tab, c)
        return out

    @staticmethod
    def _expand(key: str, tab: _Table, v: Any) -> builtins.list[Presence]:
        name, origin = tab.name, tab.origin
        return [_new_tuple(Presence, (key, c, name, m, origin)) for c, m in tab.pairs(v)]

    def list_all(self) -> builtins.list[Presence]:
        """Every visible entry."""
        out: builtins.list[Presence] = []
        down = self._down
        for tab in builtins.list(self._tabs.values()):
            if not (down and tab.origin in down):
                out += tab.presences(tab.rows())
        return out

    def _rows(self, origin: Rid) -> builtins.list[Row]:
        tab = self._tabs.get(origin)
        return tab.rows() if tab else []

    def entries_of(self, origin: Rid) -> builtins.list[Presence]:
        """Every stored entry of ``origin`` (even if the origin is down)."""
        tab = self._tabs.get(origin)
        return tab.presences(tab.rows()) if tab else []

    def _find(self, key: str, conn: str, origin: Rid) -> Meta | None:
        """The meta of the stored entry ``(key, origin, conn)``, or None."""
        tab = self._tabs.get(origin)
        if tab is None:
            return None
        v = tab.get(key)
        if v is None:
            return None
        for c, m in tab.pairs(v):
            if c == conn:
                return m
        return None

    def get(self, key: str, conn: str, origin: Rid | None = None) -> Presence | None:
        """The stored entry ``(key, origin, conn)`` (own replica by default)."""
        origin = self.replica if origin is None else origin
        m = self._find(key, conn, origin)
        return None if m is None else _presence((key, conn, origin[0], m, origin))

    def clock(self) -> dict[Rid, int]:
        """The causal context: ``{origin: counter}`` of every known, not purged origin."""
        return dict(self._ctx)

    def counter(self, origin: Rid) -> int:
        return self._ctx.get(origin, 0)

    def behind(self, clock: Mapping[Rid, int]) -> builtins.list[Rid]:
        """Origins on which ``clock`` is ahead of ours (C loops when there are none)."""
        ctx = self._ctx
        if not any(map(gt, clock.values(), map(ctx.get, clock, repeat(0)))):
            return []
        return [o for o, n in clock.items() if n > ctx.get(o, 0)]

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
        tab = self._tabs.get(origin)
        return tab.size if tab is not None else 0

    # --------------------------------------------------------- storage helpers

    def intern(self, meta: Meta | None) -> Meta:
        """One shared object per distinct meta of atomic values (most metas are equal:
        e.g. the gateway's ``{"node": ...}``), so that entries do not each hold a copy."""
        if not meta:
            return EMPTY_META
        if type(meta) is not dict or not set(map(type, meta.values())) <= _ATOMIC:
            return meta
        k = (tuple(meta.items()), tuple(map(type, meta.values())))
        got = self._interned.get(k)
        if got is None:
            if len(self._interned) >= _INTERN_MAX:
                self._interned.clear()  # bounded: metas unique per entry are not shared
            # a copy: a caller that mutates its own dict later changes no stored entry
            got = self._interned[k] = dict(meta)
        return got

    def _intern_column(self, metas: builtins.list[Any]) -> builtins.list[Any]:
        """``metas`` with equal ones shared: Python work per distinct object only."""
        if all(map(is_, metas, repeat(metas[0]))):  # one meta object for all: the common case
            m = self.intern(metas[0]) if metas[0] is not None else None
            return metas if m is metas[0] else [m] * len(metas)
        ids = builtins.list(map(id, metas))
        distinct = dict(zip(ids, metas, strict=True))
        remap: dict[int, Any] = {i: self.intern(m) for i, m in distinct.items() if m is not None}
        if all(remap[i] is m for i, m in distinct.items() if m is not None):
            return metas
        remap.update((i, None) for i, m in distinct.items() if m is None)
        return builtins.list(map(remap.__getitem__, ids))

    def _table(self, origin: Rid, meta: Meta) -> _Table:
        tab = self._tabs.get(origin)
        if tab is None:
            tab = self._tabs[origin] = _Table(origin, meta if meta is not None else EMPTY_META)
        elif not tab and meta is not None:
            tab.meta = meta  # an empty table takes the meta of its next entry as default
        return tab

    def _index(self, key: str, tab: _Table) -> None:
        cur = self._by_key.get(key)
        if cur is None:
            self._by_key[key] = tab
        elif type(cur) is _Table:
            if cur is not tab:
                self._by_key[key] = (cur, tab)
        elif not any(t is tab for t in cast("tuple[_Table, ...]", cur)):
            self._by_key[key] = (*cast("tuple[_Table, ...]", cur), tab)

    def _unindex(self, key: str, tab: _Table) -> None:
        cur = self._by_key.get(key)
        if cur is tab:
            del self._by_key[key]
        elif type(cur) is tuple:
            rest = tuple(t for t in cur if t is not tab)
            self._by_key[key] = rest[0] if len(rest) == 1 else rest

    def _put(self, origin: Rid, key: str, conn: str, meta: Meta) -> Meta | None:
        """Store the entry; returns the meta it replaced (same key, conn and origin)."""
        tab = self._table(origin, meta)
        v = tab.get(key)
        if v is None:
            tab[key] = conn if meta is tab.meta else (conn, meta)
            self._index(key, tab)
        else:
            pairs = tab.pairs(v)
            for i, (c, m) in enumerate(pairs):
                if c == conn:
                    pairs[i] = (conn, meta)
                    tab[key] = tab.value(pairs)
                    return m
            pairs.append((conn, meta))
            tab[key] = tab.value(pairs)
        tab.size += 1
        self._size += 1
        return None

    def _del(self, origin: Rid, key: str, conn: str) -> Meta | None:
        """Remove the entry; returns its meta, or None if it was not stored."""
        tab = self._tabs.get(origin)
        v = None if tab is None else tab.get(key)
        if v is None or tab is None:
            return None
        pairs = tab.pairs(v)
        for i, (c, m) in enumerate(pairs):
            if c == conn:
                del pairs[i]
                if pairs:
                    tab[key] = tab.value(pairs)
                else:
                    del tab[key]
                    self._unindex(key, tab)
                tab.size -= 1
                self._size -= 1
                return m
        return None

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
        m = self.intern(meta)
        me = self.replica
        cur = self._find(key, conn, me)
        if cur is not None and cur == m:
            return _presence((key, conn, me[0], cur, me))
        self._bump(key, conn, m)
        self._put(me, key, conn, m)
        own = self._own_conns.get(conn)
        if own is None:
            self._own_conns[conn] = key
        elif type(own) is str:
            if own != key:
                self._own_conns[conn] = {own, key}
        else:
            cast("set[str]", own).add(key)
        return _presence((key, conn, me[0], m, me))

    def update(self, key: str, conn: str, meta: Meta | None) -> Presence | None:
        """Replace the meta of a tracked entry; ``None`` if it is not tracked."""
        if self._find(key, conn, self.replica) is None:
            return None
        return self.track(key, conn, meta)

    def untrack(self, key: str, conn: str) -> Presence | None:
        """Untrack one entry; returns it, or ``None`` (no-op) if it was not tracked."""
        me = self.replica
        old = self._del(me, key, conn)
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
        return _presence((key, conn, me[0], old, me))

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
            if old in self._ctx or old in self._tabs:
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
            metas = self._intern_column(builtins.list(map(_meta_of, evs)))
            if None in metas or not self._insert_new(
                builtins.list(map(_key_of, evs)),
                builtins.list(map(_conn_of, evs)),
                metas,
                origin,
                res.joins if visible else None,
            ):
                self._apply_events(evs, metas, origin, visible, res)
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
        self,
        evs: Sequence[Event],
        metas: builtins.list[Any],
        origin: Rid,
        visible: bool,
        res: MergeResult,
    ) -> None:
        """The general (per-event) path of a delta merge."""
        name = origin[0]
        joins, leaves = res.joins, res.leaves
        for (_n, key, conn, _m), meta in zip(evs, metas, strict=True):
            if meta is None:
                old = self._del(origin, key, conn)
                if old is not None and visible:
                    leaves.append(_presence((key, conn, name, old, origin)))
            else:
                old = self._put(origin, key, conn, meta)
                if visible:
                    if old is not None:
                        leaves.append(_presence((key, conn, name, old, origin)))
                    joins.append(_presence((key, conn, name, meta, origin)))

    def _insert_new(
        self,
        keys: builtins.list[str],
        conns: builtins.list[str],
        metas: builtins.list[Any],
        origin: Rid,
        joins: builtins.list[Presence] | None,
    ) -> bool:
        """Bulk insert when every key is new to the origin's table and unique in the batch.

        This is the common shape of a join, a transfer and a big delta. The whole
        batch is then stored and indexed by C loops (``zip``/``dict.update``)
        instead of one :meth:`_put` per entry. Returns False (nothing done) when
        the batch does not have that shape; the caller takes the general path.
        """
        tab = self._table(origin, metas[0])
        if tab and not tab.keys().isdisjoint(keys):
            return False
        if len(keys) > 1 and len(set(keys)) != len(keys):
            return False
        if all(map(is_, metas, repeat(tab.meta))):  # by identity: metas are interned
            tab.update(zip(keys, conns, strict=True))
        else:
            tab.update(zip(keys, zip(conns, metas, strict=True), strict=True))
        by_key = self._by_key
        if by_key.keys().isdisjoint(keys):
            by_key.update(zip(keys, repeat(tab), strict=False))
        else:
            for key in keys:
                self._index(key, tab)
        tab.size += len(keys)
        self._size += len(keys)
        if joins is not None:
            joins += tab.columns_presences(keys, conns, metas)
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
        if ents:
            metas = self._intern_column(builtins.list(map(_meta_of_row, ents)))
            if self._tabs.get(origin) or not self._insert_new(
                builtins.list(map(_key_of_row, ents)),
                builtins.list(map(_conn_of_row, ents)),
                metas,
                origin,
                res.joins if visible else None,
            ):
                # we hold entries of this origin (or the batch has duplicates): diff
                self._replace_slice(ents, metas, origin, visible, res)
        else:
            self._replace_slice(ents, [], origin, visible, res)
        self._ctx[origin] = part.counter
        self._logs[origin] = _Log(part.counter)

    def _replace_slice(
        self,
        ents: Sequence[Row],
        metas: builtins.list[Any],
        origin: Rid,
        visible: bool,
        res: MergeResult,
    ) -> None:
        """The general path of a slice merge: diff against what we hold of ``origin``."""
        name = origin[0]
        old_map = {(k, c): m for k, c, m in self._rows(origin)}
        for (key, conn, _m), meta in zip(ents, metas, strict=True):
            old = old_map.pop((key, conn), None)
            if old is not None and old == meta:
                continue
            self._put(origin, key, conn, meta)
            if visible:
                if old is not None:
                    res.leaves.append(_presence((key, conn, name, old, origin)))
                res.joins.append(_presence((key, conn, name, meta, origin)))
        for (key, conn), old in old_map.items():
            self._del(origin, key, conn)
            if visible:
                res.leaves.append(_presence((key, conn, name, old, origin)))

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
            if prefer_delta and rc > 0:
                log = self._logs.get(origin)
                if log is not None and log.base <= rc:
                    events = _compact(e for e in log.events if e.n > rc)
                    if len(events) <= self.origin_size(origin):
                        parts.append(DeltaPart(origin, rc, n, events))
                        continue
            parts.append(SlicePart(origin, n, tuple(self._rows(origin))))
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
        tab = self._tabs.pop(origin, None)
        if tab is not None:
            if origin not in self._down:
                res.leaves = tab.presences(tab.rows())
            for key in tab:
                self._unindex(key, tab)
            self._size -= tab.size
        self._ctx.pop(origin, None)
        self._logs.pop(origin, None)
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
            out[origin] = {(k, c): m for k, c, m in self._rows(origin)}
        return out
