"""Which shard a user's presence lives in, and the channels of each shard (pure).

``shard_of(key, S) = crc32(key) mod S``: stable across processes, restarts and languages (not
Python's salted ``hash``), so every gateway, worker and producer agrees without talking.
S is fixed at deploy time; S = 1 is the unsharded design (one channel, today's names).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

__all__ = [
    "MAX_SHARDS",
    "direct_channel",
    "parse_shards",
    "shard_channel",
    "shard_of",
]

# A worker serves a handful of shards; thousands of shards would mean thousands of channels
# and queues per deployment, more than any deployment the capacity model sizes (S <= ~1,000).
MAX_SHARDS = 4096


def shard_of(key: str, shards: int) -> int:
    """The shard of user ``key`` among ``shards`` (0 when unsharded)."""
    if shards <= 1:
        return 0
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % shards


def shard_channel(prefix: str, shard: int, shards: int) -> str:
    """The broadcast channel of one shard (heartbeats, deltas, leaves).

    Unsharded: ``{prefix}:presence`` as before. Sharded: ``{prefix}:presence:{s<n>}``, whose
    braces are a Redis Cluster hash tag, so a shard's broadcast and direct channels hash to
    one slot (one node serves the whole shard under sharded pub/sub)."""
    if shards <= 1:
        return f"{prefix}:presence"
    return f"{prefix}:presence:{{s{shard}}}"


def direct_channel(prefix: str, shard: int, shards: int, name: str) -> str:
    """The channel of the replica ``name`` in one shard (transfer requests and answers)."""
    return f"{shard_channel(prefix, shard, shards)}:{name}"


def parse_shards(text: str | Iterable[int], shards: int) -> tuple[int, ...]:
    """The shards a worker serves: ``"0,2"`` or ``"1-3"`` (or ints); empty means all of them.

    Raises ``ValueError`` naming the bad item (out of range, not a number, empty range)."""
    if shards < 1 or shards > MAX_SHARDS:
        raise ValueError(f"shards: must be 1..{MAX_SHARDS} (got {shards})")
    items: list[int] = []
    if isinstance(text, str):
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            try:
                a = int(lo)
                b = int(hi) if sep else a
            except ValueError:
                raise ValueError(f"not a shard number or range: {part!r}") from None
            if b < a:
                raise ValueError(f"empty shard range: {part!r}")
            items.extend(range(a, b + 1))
    else:
        items = [int(i) for i in text]
    if not items:
        return tuple(range(shards))
    for i in items:
        if not 0 <= i < shards:
            raise ValueError(f"shard {i} out of range: there are {shards} shards (0..{shards - 1})")
    return tuple(sorted(set(items)))
