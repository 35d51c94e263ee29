"""A small asyncio TCP proxy in front of Redis that the nemesis can cut or slow down.

The gateways' and workers' Redis URL points here, so presence deltas, heartbeats and node
channels cross it; clients stay connected to the gateways while it misbehaves.
"""

from __future__ import annotations

import asyncio
import contextlib


class FaultyProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.delay_s = 0.0
        self.cut = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_all()

    def drop_all(self) -> None:
        """Reset every proxied connection (both sides see the socket die)."""
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._writers.clear()

    def set_cut(self, cut: bool) -> None:
        self.cut = cut
        if cut:
            self.drop_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            self._writers.discard(writer)
            writer.transport.abort()
            return
        if self.cut or writer not in self._writers:  # cut while we were connecting
            self._writers.discard(writer)
            for w in (writer, up_w):
                w.transport.abort()
            return
        self._writers.add(up_w)
        await asyncio.gather(self._pump(reader, up_w), self._pump(up_r, writer),
                             return_exceptions=True)
        for w in (writer, up_w):
            self._writers.discard(w)
            w.transport.abort()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        # A queue keeps the byte order while each chunk waits out the delay it was read under.
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def writer() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                dst.write(data)
                await dst.drain()

        task = asyncio.create_task(writer())
        try:
            while True:
                data = await src.read(65536)
                queue.put_nowait((loop.time() + self.delay_s, data))
                if not data:
                    break
            await task
        finally:
            task.cancel()
            dst.transport.abort()
