"""``python bench/broker_publish.py [N] [ROUNDS] [THREADS]``: what a producer pays per
``delivery.send`` publish on each broker, with this project's Celery settings (RabbitMQ:
publisher confirms, persistent messages; Redis: kombu's LPUSH).

No worker runs: it publishes N no-op tasks per broker per round from THREADS threads (default 1;
a confirm waits for the broker's disk write, which RabbitMQ shares between concurrent
publishers), rounds interleaved (the machine
is shared and noisy: compare the ratio within one run), and prints publishes/s per broker. Uses
Redis on DELIVERY_TEST_REDIS_URL (its own key prefix) and RabbitMQ on DELIVERY_TEST_AMQP_URL (a
vhost of its own, needs rabbitmqctl); removes both at the end.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from delivery.task_names import NOOP_TASK

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from celery import Celery

from delivery.celery_app import make_app
from delivery.settings import Settings
from workers.devkit.services import REDIS_URL, clear_redis_prefix, fresh_rabbitmq_vhost


def rate(app: Celery, n: int) -> float:
    kwargs = {"sender": "alice", "recipient": "bob", "body": {"text": "x" * 64}}
    start = time.perf_counter()
    for _ in range(n):
        app.send_task(NOOP_TASK, kwargs=kwargs, ignore_result=True)
    return n / (time.perf_counter() - start)


def threaded_rate(app: Celery, n: int, threads: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: rate(app, n // threads), range(threads)))
    return (n // threads * threads) / (time.perf_counter() - start)


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 1000
    rounds = int(argv[1]) if len(argv) > 1 else 3
    threads = int(argv[2]) if len(argv) > 2 else 1
    prefix = f"pubbench-{uuid.uuid4().hex[:8]}"
    with fresh_rabbitmq_vhost("delivery_bench") as amqp_url:
        apps = {
            "redis": make_app(Settings(broker_url=REDIS_URL, redis_url=REDIS_URL,
                                       key_prefix=prefix)),
            "rabbitmq": make_app(Settings(broker_url=amqp_url, redis_url=REDIS_URL,
                                          key_prefix=prefix)),
        }
        try:
            for app in apps.values():
                rate(app, 20)  # connect and declare outside the timing
            rates: dict[str, list[float]] = {k: [] for k in apps}
            for _ in range(rounds):
                for name, app in apps.items():
                    rates[name].append(threaded_rate(app, n, threads))
        finally:
            for app in apps.values():
                app.close()
            clear_redis_prefix(REDIS_URL, prefix)
    for name, rs in rates.items():
        print(f"{name:9s} {statistics.median(rs):7.0f} publishes/s, {threads} thread(s) "
              f"(median of {rounds} x {n}: {', '.join(f'{r:.0f}' for r in rs)})")
    ratio = statistics.median(rates["rabbitmq"]) / statistics.median(rates["redis"])
    print(f"rabbitmq/redis: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
