"""Waiting in asyncio tests: poll a condition until it holds or a timeout passes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(cond: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> None:
    """Await ``cond()`` every ``interval`` seconds; TimeoutError once ``timeout`` has passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(interval)
