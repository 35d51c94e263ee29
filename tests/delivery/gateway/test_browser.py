"""The browser client in headless Chromium against a real gateway: the demo page connects,
receives a replayed and a live message, acks them, and the store shows them delivered; after a
reload, a message whose ack was lost is not shown again."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from delivery.models import State
from delivery.store import Store
from tests.delivery.gateway.conftest import gateway_harness, run

CHROMIUM = next((p for p in (os.environ.get("CHROMIUM"), "/usr/bin/chromium",
                             shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p and os.path.exists(p)), None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (apt-get install chromium; "
                       ".ci/run installs it)"),
]


class Page:
    """A headless Chromium showing one URL, driven over the DevTools protocol."""

    def __init__(self, url: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        assert CHROMIUM is not None
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={self.profile}",
             "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self.ws: ClientConnection | None = None
        self._ids = itertools.count(1)

    async def attach(self, timeout: float = 30.0) -> None:
        port_file = Path(self.profile) / "DevToolsActivePort"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
            assert loop.time() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])

        def targets() -> list[dict[str, Any]]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                result: list[dict[str, Any]] = json.load(r)
                return result

        while True:
            pages = [t for t in await asyncio.to_thread(targets) if t.get("type") == "page"]
            if pages:
                break
            assert loop.time() < deadline, "no page target"
            await asyncio.sleep(0.1)
        self.ws = await connect(pages[0]["webSocketDebuggerUrl"], max_size=None)

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One DevTools protocol command; its reply."""
        assert self.ws is not None
        call_id = next(self._ids)
        await self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            reply: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if reply.get("id") == call_id:
                return reply

    async def evaluate(self, expression: str) -> Any:
        reply = await self.call("Runtime.evaluate", {
            "expression": expression, "returnByValue": True})
        return reply.get("result", {}).get("result", {}).get("value")

    async def state(self) -> dict[str, Any]:
        raw = await self.evaluate("JSON.stringify(window.deliveryState || null)")
        return json.loads(raw) if raw else {}

    async def wait_state(self, cond: Any, timeout: float = 20.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            st = await self.state()
            if st and cond(st):
                return st
            assert loop.time() < deadline, f"page state never matched: {st}"
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


def test_demo_page_receives_and_acks(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            replayed = h.accept("bob", "sent while offline")
            page = Page(f"http://127.0.0.1:{h.gateway.port}/?token={h.token('bob')}")
            try:
                await page.attach()
                st = await page.wait_state(
                    lambda s: s["status"] == "open" and len(s["messages"]) == 1)
                conn = st["conn"]
                assert conn in h.gateway.conns and h.gateway.conns[conn].user == "bob"
                assert st["messages"][0]["id"] == str(replayed.id)
                live = h.accept("bob", {"text": "hello from the test"})
                h.deliver(live, [conn])
                st = await page.wait_state(lambda s: len(s["messages"]) == 2)
                assert st["messages"][1]["body"] == {"text": "hello from the test"}
                assert st["messages"][1]["from"] == "alice"
                await h.wait_db(lambda: all(
                    sqlite_store.get(m.id).state == State.DELIVERED  # type: ignore[union-attr]
                    for m in (replayed, live)), timeout=10)
                for m in (replayed, live):
                    rec = sqlite_store.get(m.id)
                    assert rec is not None and rec.delivered_conn == conn
                text = await page.evaluate("document.body.innerText")
                assert "sent while offline" in text and "hello from the test" in text
                assert st["errors"] == []
            finally:
                await page.close()

    run(main(), timeout=90)


# Fault injection at the page's network edge: ack frames are dropped instead of sent.
DROP_ACKS = """(() => {
  const send = WebSocket.prototype.send;
  window.droppedAcks = 0;
  WebSocket.prototype.send = function (data) {
    if (typeof data === "string" && JSON.parse(data).type === "ack") {
      window.droppedAcks += 1;
      return;
    }
    return send.call(this, data);
  };
  return true;
})()"""


def test_reload_after_a_lost_ack_does_not_show_twice(sqlite_store: Store) -> None:
    """Fault: the page shows a message but its ack is dropped on the way out; then the page is
    reloaded. Traffic: that message before the reload, a new one after. Must hold: the gateway
    replays the first message to the reloaded page, which does not show it again (its id is in
    localStorage) but acks it, so the store records it delivered; the new one is shown once."""
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            page = Page(f"http://127.0.0.1:{h.gateway.port}/?token={h.token('bob')}")
            try:
                await page.attach()
                st = await page.wait_state(lambda s: s["status"] == "open")
                old_conn = st["conn"]
                assert await page.evaluate(DROP_ACKS) is True
                first = h.accept("bob", "shown before the reload")
                h.deliver(first, [old_conn])
                st = await page.wait_state(lambda s: len(s["messages"]) == 1)
                assert st["messages"][0]["id"] == str(first.id)
                assert await page.evaluate("window.droppedAcks") == 1
                stored = await page.evaluate("JSON.stringify(Object.entries(localStorage))")
                assert str(first.id) in stored
                assert h.acks == []
                assert sqlite_store.get(first.id).state != State.DELIVERED  # type: ignore[union-attr]

                reply = await page.call("Page.reload", {})
                assert "error" not in reply, reply
                st = await page.wait_state(
                    lambda s: s["status"] == "open" and s["conn"] not in (None, old_conn))
                new_conn = st["conn"]
                second = h.accept("bob", "after the reload")
                h.deliver(second, [new_conn])
                await h.wait_db(lambda: all(
                    sqlite_store.get(m.id).state == State.DELIVERED  # type: ignore[union-attr]
                    for m in (first, second)), timeout=10)
                rec = sqlite_store.get(first.id)
                assert rec is not None and rec.delivered_conn == new_conn  # acked, not shown
                st = await page.state()
                assert [m["id"] for m in st["messages"]] == [str(second.id)]
                assert st["errors"] == []
            finally:
                await page.close()

    run(main(), timeout=90)
