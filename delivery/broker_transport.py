"""kombu's Redis transport, with one client object per channel and a bulk fetch.

- **One client object per channel.** kombu builds a new ``redis.Redis`` object (over the same
  connection pool) for every command it sends outside its BRPOP loop: recording a fetched task
  as unacked, the ack, every event flush. Building one sets up redis-py's response-callback
  table, ~0.17 ms of CPU here, several times per task (~10 % of a worker's CPU in the
  end-to-end profile, docs/performance.md). A client object holds no connection of its own
  (each command borrows one from the pool) and is safe to share between threads, so each
  channel keeps one, rebuilt only if the channel's pool changes.
- **A bulk fetch.** kombu takes one task per BRPOP, so a busy worker's consumer wakes once per
  task and a send batch (delivery/send_batching.py) grows only as fast as tasks trickle in.
  After a BRPOP delivers, the channel takes up to ``fetch_max - 1`` more tasks that are already
  waiting (within the prefetch window) with one Lua script that pops them *and* records each as
  unacked in the same atomic step: unlike the BRPOP then a separate unacked write, no crash
  between the two can lose a task. The records are kombu's own (same keys and format), so the
  ack, the visibility-timeout restore and the shutdown restore are unchanged. The script reads
  the queues in BRPOP's order (priority first), never blocks, and costs one round trip. Only
  queues consumed with acks are fetched ahead: a no-ack consumer (remote-control replies) never
  acks, so a record made for it would stay. Tasks fetched but not handed over (a delivery
  raised) go back to the head of their queue at once.
  While one wake-up hands its tasks over, :data:`ARRIVALS` says so, and tells its listeners
  when the last is handed over: the send batcher then flushes them as one batch rather than
  the first alone (delivery/send_batching.py).

Nothing else differs from kombu's transport. Used for ``redis://`` brokers
(``delivery.celery_app.broker_conf``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

# KEYS: the unacked hash, the unacked index, then the queues' keys in the order to read them.
# ARGV: how many to take at most, the time to index them at, then each key's queue position.
# Returns a flat list: queue position, raw message, ... The unacked entry is what kombu's QoS
# writes ([message, exchange, routing key]), built around the raw text so it is kept verbatim.
_POP_AND_RECORD = """
local function parts(item)
  local props = cjson.decode(item)['properties']
  local info = props['delivery_info']
  local tag = props['delivery_tag']
  assert(type(tag) == 'string' and type(info) == 'table')
  return tag, cjson.encode(info['exchange']), cjson.encode(info['routing_key'])
end
local want = tonumber(ARGV[1])
local out = {}
for i = 3, #KEYS do
  if want <= 0 then break end
  local items = redis.call('RPOP', KEYS[i], want)
  if items then
    for j, item in ipairs(items) do
      local ok, tag, ex, rk = pcall(parts, item)
      if not ok then
        -- Not a kombu message: put it and the rest back where they were, for kombu's own
        -- BRPOP path to meet as it would without this script, and stop here.
        for k = #items, j, -1 do redis.call('RPUSH', KEYS[i], items[k]) end
        return out
      end
      redis.call('ZADD', KEYS[2], ARGV[2], tag)
      redis.call('HSET', KEYS[1], tag, '[' .. item .. ',' .. ex .. ',' .. rk .. ']')
      out[#out + 1] = ARGV[i]
      out[#out + 1] = item
    end
    want = want - #items
  end
end
return out
"""

DEFAULT_FETCH_MAX = 16


def extra_fetch(fetch_max: int, credit: int | None) -> int:
    """How many more tasks to take after a BRPOP delivered one: up to ``fetch_max`` in all,
    never past the prefetch window (``credit``: what it still allows; None: no window)."""
    more = fetch_max - 1
    if credit is not None:
        more = min(more, credit)
    return max(0, more)


class Arrivals:
    """Whether this process's consumer is handing over the tasks of one wake-up, and who to
    tell once it has. Written by the consumer thread only; read by any thread (a batch that
    ends meanwhile leaves the flush to the listener)."""

    def __init__(self) -> None:
        self.open = False
        self._listeners: dict[str, Callable[[], None]] = {}

    def listen(self, name: str, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each wake-up's tasks are handed over (one per ``name``: a
        consumer that restarts replaces its own)."""
        self._listeners[name] = listener

    @contextmanager
    def wake_up(self) -> Iterator[None]:
        if self.open:  # nested: the outer one tells
            yield
            return
        self.open = True
        try:
            yield
        finally:
            self.open = False
            for listener in list(self._listeners.values()):
                listener()


ARRIVALS = Arrivals()


class QoS(kombu_redis.QoS):
    """kombu's unacked bookkeeping; a task the bulk fetch already recorded is not written
    again when it is delivered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: set[str] = set()

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag in self.recorded:
            self.recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS
    from_transport_options: tuple[str, ...] = (
        *kombu_redis.Channel.from_transport_options, "fetch_max")  # type: ignore[assignment]
    fetch_max = DEFAULT_FETCH_MAX
    _shared_client: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._acked_queues: set[str] = set()  # consumed with acks: the only ones fetched ahead
        super().__init__(*args, **kwargs)

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the BRPOP and pub/sub connections: kombu's own, unchanged
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()
        return client

    def basic_consume(self, queue: str, no_ack: bool = False, *args: Any, **kwargs: Any) -> Any:
        # A no-ack consumer (e.g. the replies to a remote-control command) never acks: a task
        # recorded as unacked for it would stay recorded, so the bulk fetch leaves its queue to
        # kombu's BRPOP, which records nothing for it.
        if no_ack:
            self._acked_queues.discard(queue)
        else:
            self._acked_queues.add(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _basic_cancel(self, consumer_tag: str) -> Any:
        self._acked_queues.discard(self._tag_to_queue.get(consumer_tag, ""))
        return super()._basic_cancel(consumer_tag)

    def _brpop_read(self, **options: Any) -> bool:
        with ARRIVALS.wake_up():
            delivered: bool = super()._brpop_read(**options)
            if delivered and self.ack_emulation and self.fetch_max > 1:
                self._fetch_more()
        return delivered

    def _fetch_more(self) -> None:
        want = extra_fetch(self.fetch_max, self.qos.can_consume_max_estimate())
        queues = [q for q in self.active_queues if q in self._acked_queues]
        if not want or not queues:
            return
        keys = [self._q_for_pri(q, pri) for pri in self.priority_steps for q in queues]
        prefix = self.global_keyprefix or ""
        names = [prefix + k for k in (self.unacked_key, self.unacked_index_key, *keys)]
        where = [str(i) for i in range(len(keys))]  # ARGV[3 + i] names KEYS[3 + i]'s queue
        # EVAL, not EVALSHA: kombu's key-prefixing client rewrites EVALSHA's first key, and the
        # keys here are prefixed already.
        reply = self._create_client().execute_command(
            "EVAL", _POP_AND_RECORD, len(names), *names, want, time.time(), *where)
        fetched = []
        for i in range(0, len(reply), 2):
            key = keys[int(bytes_to_str(reply[i]))]
            payload = loads(bytes_to_str(reply[i + 1]))
            fetched.append((key.rsplit(self.sep, 1)[0], payload,
                            payload["properties"]["delivery_tag"]))
        recorded = self.qos.recorded
        for n, (queue, payload, tag) in enumerate(fetched):
            recorded.add(tag)
            try:
                self.connection._deliver(payload, queue)
            except BaseException:
                # Not handed over: back to the head of their queues at once (last first, so
                # they keep their order), not after the visibility timeout.
                for _, _, later in reversed(fetched[n + 1:]):
                    self.qos.restore_by_tag(later)
                raise
            finally:
                recorded.discard(tag)  # delivered (or given back by kombu): nothing to skip


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
