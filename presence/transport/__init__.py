"""Transports for presence replicas: Redis pub/sub and in-memory."""

from .base import FrameHandler, Transport, TransportFactory
from .memory import LinkPolicy, MemoryNetwork, MemoryTransport
from .redis import RedisTransport, redis_transport

__all__ = [
    "FrameHandler",
    "LinkPolicy",
    "MemoryNetwork",
    "MemoryTransport",
    "RedisTransport",
    "Transport",
    "TransportFactory",
    "redis_transport",
]
