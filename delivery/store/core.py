"""``Store``: every query on one engine, grouped by the rows they touch (one module each)."""

from __future__ import annotations

from delivery.store.attempts import AttemptQueries
from delivery.store.conversations import ConversationQueries
from delivery.store.devices import DeviceQueries
from delivery.store.messages import MessageQueries
from delivery.store.metrics import MetricQueries


class Store(MessageQueries, AttemptQueries, DeviceQueries, MetricQueries, ConversationQueries):
    """Thread-safe (one engine, a connection per call) access to messages, attempts, devices."""
