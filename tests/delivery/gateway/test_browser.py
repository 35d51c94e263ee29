"""The browser client in headless Chromium against a real gateway: the demo page connects,
receives a replayed and a live message, acks them, and the store shows them delivered."""

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

    async def evaluate(self, expression: str) -> Any:
        assert self.ws is not None
        call_id = next(self._ids)
        await self.ws.send(json.dumps({"id": call_id, "method": "Runtime.evaluate", "params": {
            "expression": expression, "returnByValue": True}}))
        while True:
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if reply.get("id") == call_id:
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
