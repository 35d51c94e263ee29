"""A writer replica: publishes its own entries to a shard and answers transfers, hears nothing else.

A gateway in a sharded deployment holds, per shard, only its own connections. It broadcasts
that shard's deltas and heartbeats (the :class:`~presence.replica.Replica` timers, unchanged)
on the shard's channel but does not subscribe to it: the only frames it receives are transfer
requests on its direct channel, which it answers from its own state. So its presence memory
is its own connections and its inbound traffic is the transfers it serves, whatever the
number of shards, gateways and workers.

It keeps no peers: a requester is not remembered (it would be marked down and purged after
``purge_s`` of silence, and the purge would make the writer refuse that worker's next
request), and a request's clock is not read for what *others* hold (a writer never asks
anyone for anything).
"""

from __future__ import annotations

import builtins

from . import wire
from .replica import Out, Replica

__all__ = ["WriterReplica"]


class WriterReplica(Replica):
    def receive(self, frame: bytes, now: float) -> builtins.list[Out]:
        """Answer a transfer request addressed to us; drop (and count) everything else."""
        msg = self._decode(frame, now)
        if msg is None:
            return []
        if msg.type != wire.REQ:
            self.dropped["writer_ignores"] += 1
            return []
        if msg.to != self.rid:
            self.dropped["misdirected"] += 1
            return []
        self.counters["frames_in"] += 1
        self.counters["transfers_served"] += 1
        parts = self.state.extract(msg.clock, exclude=msg.sender)
        return [Out(msg.sender[0], f) for f in self._ack_frames(msg.sender, msg.req_id, parts)]
