"""kombu's Redis transport with one Redis client object per channel for its own commands.

kombu builds a new ``redis.Redis`` object (over the same connection pool) for every command it
sends outside its BRPOP loop: recording a fetched task as unacked, the ack, every event flush.
Building one sets up redis-py's response-callback table, ~0.17 ms of CPU here, several times
per task (~10 % of a worker's CPU in the end-to-end profile, docs/performance.md). A client
object holds no connection of its own (each command borrows one from the pool) and is safe to
share between threads, so each channel keeps one, rebuilt only if the channel's pool changes.
Nothing else differs from kombu's transport: the same keys, pipelines and unacked bookkeeping.
Used for ``redis://`` brokers (``delivery.celery_app.broker_conf``).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the BRPOP and pub/sub connections: kombu's own, unchanged
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
