"""A redis-py subscriber's CPU per published node frame: the pure-Python RESP2 parser vs hiredis.

Run in a scratch venv with hiredis: ``/tmp/vx/bin/pip install redis hiredis && /tmp/vx/bin/python
bench/micro/pubsub_parsers.py`` (Redis on 127.0.0.1:6379; docs/performance.md, the gateway
section). Prints the reading thread's CPU microseconds per message, three alternated rounds.
"""

from __future__ import annotations

import json
import os
import threading
import time

import redis
from redis._parsers import _HiredisParser, _RESP2Parser

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PAYLOAD = json.dumps({"type": "deliver_batch", "frames": [
    {"type": "deliver", "id": "0" * 36, "conn": "c1", "sender": "alice",
     "body": {"text": "hello there, an ordinary message"}, "sent_at": "2026-12-02T17:00:00+00:00",
     "attempt": 1}]})


def reader_cpu_us(parser: type, n: int = 20_000) -> tuple[float, int]:
    pool = redis.ConnectionPool.from_url(URL, parser_class=parser)
    sub = redis.Redis(connection_pool=pool).pubsub(ignore_subscribe_messages=True)
    channel = f"parser-bench-{os.getpid()}-{parser.__name__}"
    sub.subscribe(channel)
    while sub.get_message(timeout=0.1) is not None:
        pass
    pub = redis.Redis.from_url(URL)

    def produce() -> None:
        pipe = pub.pipeline(transaction=False)
        for i in range(n):
            pipe.publish(channel, PAYLOAD)
            if i % 500 == 499:
                pipe.execute()
        pipe.execute()

    producer = threading.Thread(target=produce)
    producer.start()
    got = 0
    t0 = time.thread_time()
    while got < n and sub.get_message(timeout=5.0) is not None:
        got += 1
    cpu = time.thread_time() - t0
    producer.join()
    sub.close()
    pub.close()
    pool.disconnect()
    return round(cpu / max(got, 1) * 1e6, 2), got


def main() -> None:
    for _ in range(3):
        for parser in (_RESP2Parser, _HiredisParser):
            us, got = reader_cpu_us(parser)
            print(f"{parser.__name__}: {us} us of CPU per message ({got} received)")


if __name__ == "__main__":
    main()
