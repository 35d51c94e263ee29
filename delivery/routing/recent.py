"""Where each user was last connected: the routing policy asks that gateway before pushing.

Fed by the presence replica's leaves (``PresenceNode.subscribe(recent.on_diff)``): a leave is
the moment presence stops listing a connection, which is exactly when the policy needs to know
where the user was. Bounded in time (``ttl_s``) and size (``max_users``, least recently left
dropped first): a user gone for longer is pushed as before. The clock is injected.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol

from delivery.routing.policy import Conn

__all__ = ["RecentConnections"]


class _Entry(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def node(self) -> str: ...

    @property
    def conn(self) -> str: ...


class RecentConnections:
    def __init__(self, ttl_s: float = 60.0, max_users: int = 200_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0 or max_users < 1:
            raise ValueError("ttl_s must be > 0 and max_users >= 1")
        self.ttl_s = ttl_s
        self.max_users = max_users
        self.clock = clock
        self._left: OrderedDict[str, tuple[Conn, float]] = OrderedDict()

    def on_diff(self, joins: Iterable[_Entry], leaves: Iterable[_Entry]) -> None:
        """A presence diff: remember each leave as the user's last connection."""
        now = self.clock()
        left = self._left
        for p in leaves:
            left[p.key] = (Conn(p.node, p.conn), now)
            left.move_to_end(p.key)
        while len(left) > self.max_users:
            left.popitem(last=False)

    def last(self, user: str) -> Conn | None:
        """The user's last connection that presence saw end, if it ended within ``ttl_s``."""
        hit = self._left.get(user)
        if hit is None:
            return None
        if self.clock() - hit[1] > self.ttl_s:
            self._left.pop(user, None)
            return None
        return hit[0]

    def __len__(self) -> int:
        return len(self._left)
