"""The connection's two send paths (delivery/gateway/connection.py): a frame is written by the
caller when the writer is parked and the socket takes it at once, else by the writer task.

Real sockets: a websockets server whose handler wraps its socket in a gateway
:class:`Connection`, and a client that stops and resumes reading (its transport's
``pause_reading``) so the server's transport pauses writing. The server's write buffer limit and
both kernel buffers are small, so back-pressure comes after a few dozen frames."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from delivery.gateway import GatewayConfig
from delivery.gateway.connection import Connection
from delivery.gateway.session import LiveFrame, Offer
from tests.delivery.gateway.conftest import run
from tests.support.waiting import until as wait_until

PAD = "x" * 1000  # ~1 KB frames: the 4 KB write limit pauses the transport within a few frames
BUF = 4096


@dataclass
class Served:
    conn: Connection
    client: ClientConnection
    owed: list[LiveFrame] = field(default_factory=list)  # what close() returned
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    paused_seen: bool = False  # the server's transport paused writing at some point

    def offer(self, n: int, live: bool = False) -> list[str]:
        ids = []
        for _ in range(n):
            msg_id = str(uuid.uuid4())
            text = f"{msg_id} {PAD}"
            frame = (LiveFrame(msg_id, uuid.UUID(msg_id), "u", 1, (self.conn.id,), text)
                     if live else None)
            assert self.conn.offer(msg_id, text, frame) is Offer.QUEUED
            self.paused_seen |= self.conn.ws.paused
            ids.append(msg_id)
        return ids

    def stop_reading(self) -> None:
        self.client.transport.pause_reading()

    def start_reading(self) -> None:
        self.client.transport.resume_reading()


@asynccontextmanager
async def served(max_in_flight: int = 10_000) -> AsyncIterator[Served]:
    """A server socket wrapped in a :class:`Connection` (writer running, client acks fed to
    ``acked_id``), and its client; on disconnect the handler calls ``close()``."""
    cfg = GatewayConfig(max_in_flight=max_in_flight, max_queued=10_000)
    ready: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
    box: list[Served] = []

    async def handler(ws: ServerConnection) -> None:
        ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUF)
        conn = Connection("c1", "u", ws, cfg, asyncio.get_running_loop().time())
        conn.writer = asyncio.create_task(conn.write_loop())
        ready.set_result(conn)
        try:
            async for raw in ws:  # acks: the message id
                conn.acked_id(str(raw))
        except ConnectionClosed:
            pass
        finally:
            box[0].owed = conn.close()
            box[0].closed.set()

    async with serve(handler, "127.0.0.1", 0, compression=None, write_limit=BUF) as server:
        port = server.sockets[0].getsockname()[1]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUF)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        client = await connect(f"ws://127.0.0.1:{port}/", sock=sock, compression=None,
                               max_queue=None, max_size=None)
        conn = await asyncio.wait_for(ready, 5)
        box.append(Served(conn, client))
        await until(lambda: conn.parked)  # the writer has started and waits
        try:
            yield box[0]
        finally:
            await client.close()


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    await wait_until(cond, timeout, interval=0.002)


async def read_ids(client: ClientConnection, n: int, ack: bool = False) -> list[str]:
    got = []
    for _ in range(n):
        raw = await asyncio.wait_for(client.recv(), 10)
        msg_id = str(raw).split(" ", 1)[0]
        got.append(msg_id)
        if ack:
            await client.send(msg_id)
    return got


def test_frames_in_order_across_both_paths() -> None:
    """Caller writes, then back-pressure (the writer takes over and waits), then the client
    reads again and the caller writes once more: every frame arrives once, in offer order."""
    async def main() -> None:
        async with served() as s:
            sent = s.offer(5)
            assert s.conn.direct == 5  # parked writer, open socket, no back-pressure
            s.stop_reading()
            for _ in range(40):  # the buffers fill: the transport pauses writing
                sent += s.offer(5)
                await asyncio.sleep(0)
                if s.paused_seen:
                    break
            assert s.paused_seen and s.conn.ws.paused
            sent += s.offer(20)  # behind back-pressure: queued for the writer
            assert s.conn.direct < len(sent) and not s.conn.parked
            s.start_reading()
            got = await read_ids(s.client, len(sent))
            await until(lambda: s.conn.parked)
            direct = s.conn.direct
            more = s.offer(5)  # the writer is parked again: the caller writes
            assert s.conn.direct == direct + 5
            got += await read_ids(s.client, 5)
            assert got == sent + more
            assert s.conn.sent == len(got) and not s.conn.session.outbox

    run(main())


def test_acks_free_the_window_and_keep_the_order() -> None:
    """A window of 4: most frames leave when an ack frees a slot (``acked_id`` writes the next
    one itself), with reading stopped and resumed in between; the order still holds."""
    async def main() -> None:
        async with served(max_in_flight=4) as s:
            sent = s.offer(60)
            assert s.conn.direct == 4 and len(s.conn.session.outbox) == 56
            got = await read_ids(s.client, 20, ack=True)
            s.stop_reading()
            sent += s.offer(30)
            await asyncio.sleep(0.05)
            s.start_reading()
            got += await read_ids(s.client, len(sent) - 20, ack=True)
            assert got == sent
            await until(lambda: not s.conn.in_flight)

    run(main())


def test_close_mid_stream_returns_every_unacked_frame() -> None:
    """The client goes away with frames acked, in flight (some written by the caller, some by
    the writer) and queued: close() returns exactly the live frames not acked, each once."""
    async def main() -> None:
        async with served(max_in_flight=64) as s:
            sent = s.offer(10, live=True)
            acked = await read_ids(s.client, 6, ack=True)
            s.stop_reading()
            for _ in range(40):
                sent += s.offer(5, live=True)
                await asyncio.sleep(0)
                if s.paused_seen:
                    break
            assert s.paused_seen
            sent += s.offer(80, live=True)  # beyond the window: some stay queued
            assert s.conn.session.outbox
            await until(lambda: s.conn.session.acked_count == 6)  # the acks are in
            s.client.transport.abort()  # gone mid-stream
            await asyncio.wait_for(s.closed.wait(), 5)
            owed = [f.id for f in s.owed]
            assert len(owed) == len(set(owed))
            assert set(owed) == set(sent) - set(acked)
            assert s.conn.offer(str(uuid.uuid4()), "late", None) is Offer.CLOSED

    run(main())


# A schedule step: offer n frames, let the loop run k steps, stop or start the client's
# reading, or read and ack what has arrived.
step = st.one_of(
    st.tuples(st.just("offer"), st.integers(1, 12)),
    st.tuples(st.just("yield"), st.integers(1, 5)),
    st.tuples(st.just("stop"), st.just(0)),
    st.tuples(st.just("start"), st.just(0)),
    st.tuples(st.just("read"), st.integers(1, 10)),
)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(window=st.sampled_from([2, 8, 10_000]), steps=st.lists(step, min_size=1, max_size=25))
def test_any_schedule_keeps_order_and_loses_nothing(window: int,
                                                    steps: list[tuple[str, int]]) -> None:
    async def main() -> None:
        async with served(max_in_flight=window) as s:
            sent: list[str] = []
            got: list[str] = []
            for op, n in steps:
                if op == "offer":
                    sent += s.offer(n)
                elif op == "yield":
                    for _ in range(n):
                        await asyncio.sleep(0)
                elif op == "stop":
                    s.stop_reading()
                elif op == "start":
                    s.start_reading()
                elif s.client.transport.is_reading():
                    # Each ack frees a slot for the next frame: all offered can arrive.
                    got += await read_ids(s.client, min(n, len(sent) - len(got)), ack=True)
            s.start_reading()
            got += await read_ids(s.client, len(sent) - len(got), ack=True)
            assert got == sent

    run(main())
