"""The transport interface between presence replicas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["FrameHandler", "Transport", "TransportFactory"]

FrameHandler = Callable[[bytes], None]


@runtime_checkable
class Transport(Protocol):
    """How one replica exchanges frames with the others.

    * ``broadcast`` goes to every other replica (heartbeats, deltas, leave);
    * ``send`` goes to the replica *named* ``to`` only (transfer request/answer);
    * ``start`` registers the handler called with each received frame (from any
      thread; the handler must be quick and thread-safe);
    * ``close`` stops delivery and releases resources. It is idempotent.

    A transport may drop, duplicate, delay or reorder frames: the replica
    tolerates all of these.
    """

    name: str

    def start(self, on_frame: FrameHandler) -> None: ...

    def broadcast(self, frame: bytes) -> None: ...

    def send(self, to: str, frame: bytes) -> None: ...

    def close(self) -> None: ...


TransportFactory = Callable[[str], Transport]
