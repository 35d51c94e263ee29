"""A chat app's client process for the restart test: ``python -m tests.delivery.dedupe_client_proc
URL TOKEN DEDUPE_PATH``. It shows each message by printing ``shown ID``, with the dedupe file.

Fault: once an id is recorded in the file, it prints ``recorded ID`` and hangs before sending
the ack (its event loop is blocked), so the parent can kill it with the ack never sent.
"""

from __future__ import annotations

import asyncio
import sys
import time

from delivery.client import DeliveryClient, Message
from delivery.client_dedupe import SqliteSeenStore


class HangAfterRecording(SqliteSeenStore):
    def add(self, msg_id: str) -> None:
        super().add(msg_id)
        print(f"recorded {msg_id}", flush=True)
        time.sleep(3600)


def show(msg: Message) -> None:
    print(f"shown {msg.id}", flush=True)


async def main(url: str, token: str, path: str) -> None:
    async with DeliveryClient(url, token, seen_store=HangAfterRecording(path)) as client:
        await client.run(show)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
