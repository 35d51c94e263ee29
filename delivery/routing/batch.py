"""Batch planning for the send path (pure: no I/O, no clock).

Two decisions, kept apart from the Celery and Redis shells that carry them out:

- ``take``: how many buffered sends to hand to a pool thread now. Group commit, not a timer: a
  send arriving while fewer than ``max_inflight`` batches run is flushed at once (a lone message
  waits for nothing); sends arriving while the pool is busy wait for a batch to finish, so the
  batch grows with the load and one transaction, one commit and one PUBLISH per node serve them
  all. Sends handed over by one broker fetch (``arriving``: the fetch is still handing them
  over, within one wake-up of the consumer) wait for its last one and go together.
- ``by_node``: the frames of a batch grouped per gateway node, so each node gets one PUBLISH per
  batch whatever the number of messages and connections.
"""

from __future__ import annotations

from collections.abc import Sequence

from delivery.gateway.protocol import Deliver
from delivery.routing.policy import Conn


def take(buffered: int, inflight: int, *, max_inflight: int, max_batch: int,
         arriving: bool = False) -> int:
    """How many of ``buffered`` waiting sends to flush as one batch now (0: wait for a running
    batch to finish, or for the fetch that is ``arriving`` to end; either flushes what
    accumulated meanwhile)."""
    if buffered <= 0 or inflight >= max_inflight or arriving:
        return 0
    return min(buffered, max_batch)


def by_node(planned: Sequence[tuple[Deliver, Sequence[Conn]]]) -> dict[str, list[Deliver]]:
    """Per node, one frame per message naming that node's target connections, in the order of
    ``planned`` (the order the messages were claimed)."""
    out: dict[str, list[Deliver]] = {}
    for frame, targets in planned:
        conns: dict[str, list[str]] = {}
        for t in targets:
            conns.setdefault(t.node, []).append(t.conn)
        for node, cs in conns.items():
            out.setdefault(node, []).append(frame._replace(conns=tuple(cs)))
    return out
