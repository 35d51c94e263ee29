"""Celery app factory (``workers.app`` builds the app the ``celery`` command uses).

Configuration choices (documented in the README's operations section and docs/operations.md):
- JSON only; ``acks_late`` with ``task_reject_on_worker_lost``: a task leaves the broker only
  after it ran, and a worker killed mid-task gives it back. Tasks are idempotent by message id.
- RabbitMQ (``amqp://``, ``pyamqp://``; the production recommendation): publisher confirms (a
  publish returns only once the broker has the message), persistent messages on durable
  *classic* queues. Not quorum queues: Celery sends countdown tasks on quorum queues through
  its native delayed delivery, which rejects sub-second countdowns (our re-checks wait 0.2-1 s)
  and needs topic exchanges; on the default direct exchange the worker holds each countdown
  task inside a fixed prefetch window instead. A killed worker's unacked tasks are requeued by
  RabbitMQ the moment its connection drops.
- Redis: ``visibility_timeout`` (DELIVERY_VISIBILITY_TIMEOUT_S) is how long a task fetched by a
  worker that vanished stays invisible; it must exceed the longest countdown (push backoff is
  capped at a fifth of it). kombu scans for such tasks every ``RESTORE_INTERVAL_S`` (its default
  is 10 s x a throttle of 10). Stored messages never wait for it: every task whose loss would
  delay a stored message is backed by an ack deadline in the database, which the recovery sweep
  acts on. A send task whose message is not stored yet is the broker's alone. ``redis://``
  brokers go through ``delivery.broker_transport`` (kombu's transport, one client object per
  channel instead of one per command, and up to ``DELIVERY_BROKER_FETCH_MAX`` waiting tasks
  taken per consumer wake-up, each popped and recorded as unacked in one atomic step: the same
  keys and bookkeeping, less CPU per task, and send batches that grow with the queue).
- Task events on, so Flower shows every task under its stable name; message bodies are replaced
  by ``<redacted>`` in the task headers that Flower and the logs read.
- Sharded (DELIVERY_PRESENCE_SHARDS > 1): ``delivery.send`` and ``delivery.route`` go to the
  queue of their ``recipient``'s shard (``shard_routes``), whoever publishes them; everything
  else stays on Celery's default queue, which every worker consumes.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from celery import Celery
from celery.app.amqp import AMQP

from delivery import redaction
from delivery.broker_transport import TRANSPORT
from delivery.settings import Settings, get_settings
from delivery.sharding import shard_count
from delivery.task_names import ROUTE_TASK, SEND_TASK, shard_queue
from presence.shards import shard_of

REDACTED_FIELDS = ("body",)
TASK_MODULES = ["delivery.tasks", "delivery.routing.tasks", "delivery.push.tasks"]
# Seconds between kombu's scans for tasks of vanished Redis consumers (see the module doc).
RESTORE_INTERVAL_S = 5

BrokerKind = Literal["amqp", "redis", "other"]
_AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
_REDIS_SCHEMES = ("redis", "rediss", "sentinel")


def broker_kind(url: str) -> BrokerKind:
    """Which family of broker ``url`` names (the options below differ per family)."""
    scheme = urlsplit(url).scheme.split("+")[0]
    if scheme in _AMQP_SCHEMES:
        return "amqp"
    if scheme in _REDIS_SCHEMES:
        return "redis"
    return "other"  # memory:// (embedded) or a transport we do not tune


def broker_conf(settings: Settings) -> dict[str, Any]:
    """The Celery settings that depend on the broker (pure: no connection is made)."""
    kind = broker_kind(settings.effective_broker_url)
    if kind == "amqp":
        return {
            "broker_transport_options": {"confirm_publish": True},
            "task_default_queue_type": "classic",
            "task_create_missing_queue_type": "classic",
            # Survives a broker restart: persistent messages on the (durable) default queue.
            "task_default_delivery_mode": "persistent",
        }
    if kind == "redis":
        plain = urlsplit(settings.effective_broker_url).scheme == "redis"
        return {**({"broker_transport": TRANSPORT} if plain else {}), "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": RESTORE_INTERVAL_S,
            "unacked_restore_throttle": 1,
            # Keeps every Celery key of one deployment (or one test run) apart on a shared Redis.
            "global_keyprefix": f"{settings.key_prefix}:celery:",
            **({"fetch_max": settings.broker_fetch_max} if plain else {}),
        }}
    return {"broker_transport_options": {}}


# The tasks that read presence: each runs on a worker replicating its recipient's shard.
SHARDED_TASKS = frozenset({SEND_TASK, ROUTE_TASK})


def shard_routes(shards: int) -> Any:
    """A Celery router: a send or route task with a ``recipient`` kwarg goes to that recipient's
    shard queue. A task without one (an old producer) falls to the default queue; the worker
    that takes it hands it to the right shard (``Router.forward``)."""

    def route(name: str, args: Any, kwargs: Any, options: Any, task: Any = None,
              **_: Any) -> dict[str, str] | None:
        if name not in SHARDED_TASKS or not isinstance(kwargs, dict):
            return None
        recipient = kwargs.get("recipient")
        if not isinstance(recipient, str):
            return None
        return {"queue": shard_queue(shard_of(recipient, shards), shards)}

    return route


class RedactingAMQP(AMQP):
    """Redacts bodies when the task message is built, so the task-sent event (which Flower
    shows for tasks no worker has picked up yet) never carries them either."""

    def as_task_v2(self, task_id: str, name: str, args: Any = None, kwargs: Any = None,
                   *rest: Any, **opts: Any) -> Any:
        if (opts.get("kwargsrepr") is None and isinstance(kwargs, dict)
                and any(f in kwargs for f in REDACTED_FIELDS)):
            opts["kwargsrepr"] = repr({k: ("<redacted>" if k in REDACTED_FIELDS else v)
                                       for k, v in kwargs.items()})
        return super().as_task_v2(task_id, name, args, kwargs, *rest, **opts)


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("delivery", amqp=RedactingAMQP, include=TASK_MODULES)
    redaction.install(app)  # task failures reach the backend, Flower and logs scrubbed
    result_backend = (
        settings.redis_url if settings.redis_url and not settings.embedded else "cache+memory://"
    )
    app.conf.update(
        broker_url=settings.effective_broker_url,
        result_backend=result_backend,
        result_expires=3600,
        task_store_errors_even_if_ignored=True,
        result_backend_transport_options={"global_keyprefix": f"{settings.key_prefix}:celery:"},
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        # Threads: task bodies wait on the database and Redis, and one presence replica per
        # worker process serves every task thread (prefork would need one replica per child).
        worker_pool="threads",
        worker_concurrency=8,
        worker_prefetch_multiplier=settings.worker_prefetch_multiplier,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
        enable_utc=True,
    )
    app.conf.update(broker_conf(settings))
    shards = shard_count(settings)
    if shards > 1:  # unsharded: no router at all, every task on the default queue as before
        app.conf.task_routes = (shard_routes(shards),)
    return app


_producer: Celery | None = None


def producer_app() -> Celery:
    """The project's Celery app for producers (``send_message`` without ``app=``).

    In a worker (or any process that made the project's app current) that app; elsewhere one
    built from the ``DELIVERY_*`` settings — never Celery's default app, which would publish
    to ``amqp://guest@localhost//`` instead of the configured broker."""
    global _producer
    from celery import current_app

    if current_app.main == "delivery":
        return current_app
    if _producer is None:
        _producer = make_app()
    return _producer


def reset_producer_app() -> None:
    """Forget the cached producer app (tests and commands that change the settings)."""
    global _producer
    _producer = None
