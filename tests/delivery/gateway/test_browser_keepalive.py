"""The browser client in headless Chromium: it pings the gateway and stays connected while
pongs come back, replaces a connection whose pong never comes, and acks a message only after
the application's async handler has resolved."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from delivery.models import State
from delivery.store import Store
from tests.delivery.gateway.conftest import gateway_harness, run
from tests.delivery.gateway.test_browser import CHROMIUM, Page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (apt-get install chromium; "
                       ".ci/run installs it)"),
]

# Starts a client in the page; its async "message" handler waits until the test releases it.
START = """(() => {
  window.got = []; window.done = []; window.releases = {}; window.statuses = [];
  import("/client.js").then(async ({ DeliveryClient }) => {
    const c = new DeliveryClient(%(url)s, %(token)s, %(options)s);
    window.kc = c;
    c.addEventListener("status", (e) => window.statuses.push(e.detail.status));
    c.addEventListener("message", async (e) => {
      window.got.push(e.detail.id);
      await new Promise((resolve) => { window.releases[e.detail.id] = resolve; });
      window.done.push(e.detail.id);
    });
    await c.connect();
  }).catch((err) => { window.startError = String(err && err.stack || err); });
  return true;
})()"""


async def start_client(page: Page, url: str, token: str, **options: Any) -> None:
    # The page must have loaded first: a navigation would drop what we set on window.
    await until(page, "location.pathname === '/client.js' && document.readyState === 'complete'")
    expr = START % {"url": json.dumps(url), "token": json.dumps(token),
                    "options": json.dumps({"storage": None, **options})}
    assert await page.evaluate(expr) is True


DEBUG = """(window.startError || '') + ' ' + JSON.stringify(
  [window.statuses, window.kc && window.kc.status, location.href])"""


async def until(page: Page, expression: str, timeout: float = 20.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await page.evaluate(expression)
        if value:
            return value
        if loop.time() > deadline:
            error = await page.evaluate(DEBUG)
            raise AssertionError(f"never true: {expression} {error}")
        await asyncio.sleep(0.05)


def test_pings_keep_it_open_and_acks_wait_for_async_handlers(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            page = Page(f"http://127.0.0.1:{h.gateway.port}/client.js")
            try:
                await page.attach()
                await start_client(page, h.gateway.url, h.token("bob"),
                                   pingIntervalMs=100, pongTimeoutMs=10000)
                await until(page, "window.kc && window.kc.status === 'open'")
                await until(page, "window.kc.stats.pings >= 5")
                stats = await page.evaluate("JSON.stringify(window.kc.stats)")
                assert json.loads(stats)["connects"] == 1
                assert json.loads(stats)["pongTimeouts"] == 0

                conn = next(iter(h.gateway.conns))
                msg = h.accept("bob", {"text": "saved by an async handler"})
                h.deliver(msg, [conn])
                await until(page, f"window.got.includes({json.dumps(str(msg.id))})")
                # The handler is still awaiting: nothing acked yet.
                assert await page.evaluate("window.kc.stats.acksSent") == 0
                assert sqlite_store.get(msg.id).state != State.DELIVERED  # type: ignore[union-attr]
                await page.evaluate(f"window.releases[{json.dumps(str(msg.id))}]()")
                await h.wait_db(lambda: sqlite_store.get(msg.id).state  # type: ignore[union-attr]
                                == State.DELIVERED, timeout=10)
                assert await page.evaluate("window.kc.stats.acksSent") == 1
            finally:
                await page.close()

    run(main(), timeout=90)


def test_missing_pong_reconnects(sqlite_store: Store) -> None:
    """A server that welcomes but never answers a ping (a half-dead connection)."""
    accepted: list[ServerConnection] = []
    pings: list[str] = []

    async def silent(ws: ServerConnection) -> None:
        accepted.append(ws)
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "hello":
                await ws.send(json.dumps({"type": "welcome", "conn": f"c{len(accepted)}",
                                          "user": "bob"}))
            elif frame["type"] == "ping":
                pings.append(ws.id.hex)  # and no pong

    async def main() -> None:
        async with serve(silent, "127.0.0.1", 0) as server, gateway_harness(sqlite_store) as h:
            port = server.sockets[0].getsockname()[1]  # type: ignore[index]
            page = Page(f"http://127.0.0.1:{h.gateway.port}/client.js")
            try:
                await page.attach()
                await start_client(page, f"ws://127.0.0.1:{port}/ws", "any",
                                   pingIntervalMs=100, pongTimeoutMs=300, backoffInitialMs=10)
                await until(page, "window.kc && window.kc.stats.connects >= 2")
                assert await page.evaluate("window.kc.stats.pongTimeouts") >= 1
                assert len(accepted) >= 2 and pings
                statuses = await page.evaluate("window.statuses.join(',')")
                assert "open,closed,connecting,open" in statuses, statuses
            finally:
                await page.close()

    run(main(), timeout=90)
