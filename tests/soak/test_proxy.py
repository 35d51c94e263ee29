"""The nemesis' TCP proxy against a real echo server on loopback."""

from __future__ import annotations

import asyncio

from bench.soak.proxy import FaultyProxy


async def _echo_server() -> asyncio.Server:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(1024):
            w.write(data)
            await w.drain()
        w.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def _roundtrip(port: int, payload: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(payload)
    await w.drain()
    data = await asyncio.wait_for(r.readexactly(len(payload)), 10)
    w.close()
    return data


def test_forwards_delays_in_order_and_cuts() -> None:
    async def main() -> None:
        server = await _echo_server()
        proxy = FaultyProxy("127.0.0.1", int(server.sockets[0].getsockname()[1]))
        await proxy.start()
        assert await _roundtrip(proxy.port, b"hello") == b"hello"

        proxy.delay_s = 0.3
        loop = asyncio.get_running_loop()
        t = loop.time()
        assert await _roundtrip(proxy.port, b"slow") == b"slow"
        assert loop.time() - t >= 0.5  # delayed both ways
        proxy.delay_s = 0.0

        r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
        proxy.set_cut(True)
        assert await asyncio.wait_for(r.read(10), 10) == b""  # the live connection died
        w.close()
        r2, w2 = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(r2.read(10), 10) == b""  # new ones are refused
        w2.close()
        proxy.set_cut(False)
        assert await _roundtrip(proxy.port, b"back") == b"back"
        await proxy.close()
        server.close()

    asyncio.run(main())
