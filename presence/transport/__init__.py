"""Transports for presence replicas: Redis pub/sub and in-memory."""

from .base import FrameHandler, Transport, TransportFactory
from .memory import LinkPolicy, MemoryNetwork, MemoryTransport

__all__ = [
    "FrameHandler",
    "LinkPolicy",
    "MemoryNetwork",
    "MemoryTransport",
    "Transport",
    "TransportFactory",
]
