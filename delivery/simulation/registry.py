"""The seed article's own suggestion, simulated: a strongly consistent connection registry.

Gateways write every connect and every disconnect they notice to one central, linearizable
store (think a single Redis primary or a consensus-backed key-value store); the router reads it
for every message instead of a local presence replica, sends the frame where the registry says
and, as in the seed's code, assumes it was delivered. A lookup therefore never sees a stale
connection once the gateway has recorded the change, but:

* every message pays a lookup round trip (``registry_lookup_ms``) before it can be sent, and the
  registry carries one read per message and one write per connect and per disconnect;
* a change is visible only once its write has landed (``registry_write_ms`` after the gateway
  noticed it), a half-open connection stays listed until the gateway notices it, and a crashed
  gateway's entries stay listed until their lease runs out (``down_s``);
* nothing stops the connection from dying between the lookup and the write to the socket:
  such a frame is lost, exactly as in the seed.

The lookup is linearized when the request is sent (the state it reads is the registry's at that
instant); this favours the registry by half a round trip, which is negligible here.
"""

from __future__ import annotations

import math
import random
from typing import Protocol

__all__ = ["Registry"]

INF = math.inf


class _Conn(Protocol):
    cid: str


class Registry:
    """Per user: the connection the registry lists (``before``) until ``switch_at``, then
    ``after``. One pending change per user is enough: a newer change replaces the older one."""

    __slots__ = ("_by_user", "lookups", "rng", "write_s", "writes")

    def __init__(self, write_s: float, rng: random.Random) -> None:
        self.write_s = write_s
        self.rng = rng
        self.lookups = 0
        self.writes = 0
        self._by_user: dict[int, tuple[_Conn | None, _Conn | None, float]] = {}

    def at(self, user: int, t: float) -> _Conn | None:
        """The connection a linearizable read at ``t`` returns (None: nobody registered)."""
        entry = self._by_user.get(user)
        if entry is None:
            return None
        before, after, switch_at = entry
        return after if t >= switch_at else before

    def _write_lands(self, t: float) -> float:
        return t + self.write_s * (0.5 + self.rng.random())

    def connected(self, user: int, conn: _Conn, now: float) -> None:
        """The gateway accepted ``conn`` at ``now``; its write lands a little later."""
        self.writes += 1
        self._by_user[user] = (self.at(user, now), conn, self._write_lands(now))

    def ended(self, user: int, conn: _Conn, now: float) -> None:
        """The gateway noticed (or a lease expiry declared) ``conn`` gone at ``now``. A newer
        connection of the same user stays registered."""
        self.writes += 1
        entry = self._by_user.get(user)
        if entry is None:
            return
        before, after, switch_at = entry
        if after is conn:
            self._by_user[user] = (self.at(user, now), None, self._write_lands(now))
        elif before is conn and now < switch_at:
            self._by_user[user] = (None, after, switch_at)
