"""The browser client's conversation side in headless Chromium, against the scripted peer of
tests/delivery/test_client_conversations.py (frames in exactly the order a test needs): order
by prev with the bound, receipts handed over once and acked, markRead, and the order kept
across a page reload (localStorage)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from delivery.store import Store
from tests.delivery.gateway.conftest import gateway_harness, run
from tests.delivery.gateway.test_browser import CHROMIUM, Page
from tests.delivery.gateway.test_browser_keepalive import until
from tests.delivery.test_client_conversations import msg, peer, receipt

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (apt-get install chromium; "
                       ".ci/run installs it)"),
]

START = """(() => {
  window.shown = []; window.receipts = []; window.gaps = [];
  import("/client.js").then(async ({ DeliveryClient }) => {
    const c = new DeliveryClient(%(url)s, "t", { orderWaitMs: %(wait)d });
    window.kc = c;
    c.addEventListener("message", (e) => window.shown.push([e.detail.seq, e.detail.late]));
    c.addEventListener("receipt", (e) => window.receipts.push(e.detail));
    c.addEventListener("gap", (e) => window.gaps.push(e.detail));
    await c.connect();
  }).catch((err) => { window.startError = String(err && err.stack || err); });
  return true;
})()"""


async def start(page: Page, url: str, wait_ms: int = 500) -> None:
    # Not about:blank, which Chromium shows (complete) before it navigates to the page.
    await until(page, "location.pathname === '/' && document.readyState === 'complete'")
    assert await page.evaluate(START % {"url": json.dumps(url), "wait": wait_ms}) is True
    await until(page, "window.kc && window.kc.status === 'open'")


async def shown(page: Page, n: int) -> list[Any]:
    await until(page, f"window.shown.length >= {n}")
    value: list[Any] = await page.evaluate("window.shown")
    return value


def test_order_receipts_reads_and_a_reload(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h, peer() as p:
            # The demo page without a token: it only loads the client module.
            page = Page(f"http://127.0.0.1:{h.gateway.port}/")
            try:
                await page.attach()
                await start(page, p.url)
                await p.send(msg(4, 2), msg(2, 0), msg(7, 5))  # 5 never comes
                assert await shown(page, 3) == [[2, False], [4, False], [7, False]]
                assert await page.evaluate("window.gaps.map((g) => [g.first, g.last])") == [
                    [5, 6]]
                await p.send(msg(5, 4))
                assert (await shown(page, 4))[-1] == [5, True]
                await p.until(lambda: len(p.sent_by_client("ack")) == 4)
                # Acks follow the order shown.
                assert [a["id"] for a in p.sent_by_client("ack")] == [
                    msg(n, 0)["id"] for n in (2, 4, 7, 5)]

                first = receipt("delivered")
                await p.send(first, receipt("read"), first)
                await until(page, "window.receipts.length >= 2")
                await p.until(lambda: len(p.sent_by_client("ack")) == 7)
                assert [r["status"] for r in await page.evaluate("window.receipts")] == [
                    "delivered", "read"]

                assert await page.evaluate("window.kc.markRead('team', 7)") is True
                await p.until(lambda: p.sent_by_client("read") == [
                    {"type": "read", "conversation": "team", "seq": 7}])

                # After a reload the order continues from 7: 9 (prev 7) is shown at once.
                reply = await page.call("Page.reload", {})
                assert "error" not in reply, reply
                await until(page, "window.kc === undefined && document.readyState === 'complete'")
                await start(page, p.url, wait_ms=60000)
                await p.send(msg(9, 7))
                assert await shown(page, 1) == [[9, False]]
            finally:
                await page.close()

    run(main(), timeout=120)
