"""Celery task names, defined once: stable, so Flower and operators can filter on them."""

from __future__ import annotations

SEND_TASK = "delivery.send"
SEND_GROUP_TASK = "delivery.send_group"  # a message to a group conversation
ROUTE_TASK = "delivery.route"
PUSH_TASK = "delivery.push"
REGISTER_DEVICE_TASK = "delivery.register_device"
# The raw-Celery baseline of the end-to-end benchmark: an empty task.
NOOP_TASK = "delivery.noop"
