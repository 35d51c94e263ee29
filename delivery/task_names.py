"""Celery task names, defined once: stable, so Flower and operators can filter on them."""

from __future__ import annotations

SEND_TASK = "delivery.send"
SEND_GROUP_TASK = "delivery.send_group"  # a message to a group conversation
ROUTE_TASK = "delivery.route"
PUSH_TASK = "delivery.push"
REGISTER_DEVICE_TASK = "delivery.register_device"
# The raw-Celery baseline of the end-to-end benchmark: an empty task.
NOOP_TASK = "delivery.noop"

# Queues. Unsharded (S = 1) every task goes to Celery's default queue, as it always has. With
# S shards, the tasks that read presence (send, route) go to the recipient's shard queue,
# consumed only by workers that replicate that shard; push and device tasks need no presence
# and stay on the common queue every worker consumes.
COMMON_QUEUE = "celery"
SHARD_QUEUE_PREFIX = "delivery.s"


def shard_queue(shard: int, shards: int) -> str:
    """The Celery queue of ``shard`` among ``shards`` (the common queue when unsharded)."""
    return COMMON_QUEUE if shards <= 1 else f"{SHARD_QUEUE_PREFIX}{shard}"
