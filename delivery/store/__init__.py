"""The durable store: the only package that holds SQL.

``core.Store`` gathers the queries by row kind (``messages``, ``attempts``, ``devices``,
``metrics``); the gateway's writes (``acks``), the push path's (``push``) and the pruning of
attempt rows (``prune``) are functions on a ``Store``.
"""

from delivery.store.core import Store
from delivery.store.records import AttemptRecord, DeviceRecord, MessageRecord, Target

__all__ = ["AttemptRecord", "DeviceRecord", "MessageRecord", "Store", "Target"]
