"""The peer of ``delivery bench e2e``: what a Python team would build instead of this pipeline.

A Celery task looks the recipient up (a Redis set of online users) and emits through
python-socketio's Redis manager to two python-socketio servers; no store, no ack, no push.
Dev-only (``pip install -e .[dev]``): nothing here is imported by the runtime packages.

- ``app``: the Celery app and its one task, ``peer.send`` (run with the same worker flags as
  ours: ``celery -A bench.peer_socketio.app worker --pool threads -c 8 -E``);
- ``server``: a Socket.IO server node (aiohttp) on the shared Redis manager channel;
- ``clients``: K Socket.IO users in one process, reporting what they receive in the same JSON
  lines as ``bench.clients``;
- ``run``: starts the whole peer and measures it, called by ``bench.e2e``.

Configuration comes from ``PEER_REDIS_URL`` and ``PEER_PREFIX`` (keys, channel and Celery
queues of one run).
"""
