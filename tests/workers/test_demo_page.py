"""The demo chat page in headless Chromium against a running ``delivery up``: two browsers
(separate profiles: two users' contexts) sign in with the links it prints; alice sends in the
group ``demo`` through the page, bob's page shows the messages in seq order, and alice's page
shows her messages read (the tick goes sent -> delivered -> read as receipts arrive)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.delivery.gateway.conftest import run
from tests.delivery.gateway.test_browser import CHROMIUM, Page
from tests.support.up import delivery_up

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (apt-get install chromium; "
                       ".ci/run installs it)"),
]

# Types into the page's message box and submits, as a person does.
TYPE_AND_SEND = """(() => {
  const input = document.getElementById("text");
  if (input.disabled) return false;
  input.value = %s;
  document.getElementById("send").requestSubmit();
  return true;
})()"""


def items(st: dict[str, Any], conversation: str = "demo") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = st.get("conversations", {}).get(conversation, [])
    return found


async def say(page: Page, text: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not await page.evaluate(TYPE_AND_SEND % json.dumps(text)):
        assert loop.time() < deadline, "the message box stayed disabled"
        await asyncio.sleep(0.1)


def test_two_users_chat_in_order_and_the_sender_sees_read(tmp_path: Path) -> None:
    async def main() -> None:
        with delivery_up(tmp_path) as up:
            alice, bob = Page(up.links["alice"]), Page(up.links["bob"])
            try:
                await alice.attach()
                await bob.attach()
                for page in (alice, bob):
                    st = await page.wait_state(
                        lambda s: s["status"] == "open" and s["selected"] == "demo")
                    assert st["api"] == up.api
                for text in ("hello bob", "are you there?", "third"):
                    await say(alice, text)
                st = await bob.wait_state(lambda s: len(items(s)) == 3, timeout=30)
                got = items(st)
                assert [m["text"] for m in got] == ["hello bob", "are you there?", "third"]
                assert all(m["from"] == "alice" and not m["mine"] for m in got)
                seqs = [m["seq"] for m in got]
                assert seqs == sorted(seqs) and len(set(seqs)) == 3
                text = await bob.evaluate("document.getElementById('messages').innerText")
                assert text.index("hello bob") < text.index("are you there?") < text.index(
                    "third")
                # bob's page has the conversation open: it marks it read, and alice's page
                # turns every one of her messages' ticks to read (by bob).
                st = await alice.wait_state(
                    lambda s: [m["tick"] for m in items(s)] == ["read"] * 3, timeout=30)
                assert all(m["mine"] and "bob" in m["by"] for m in items(st))
                assert [m["seq"] for m in items(st)][-1] == seqs[-1]
                ticks = await alice.evaluate(
                    "[...document.querySelectorAll('.tick')].map((t) => t.dataset.tick)")
                assert ticks == ["read"] * 3
                # bob answers; alice sees it after hers, in seq order.
                await say(bob, "yes!")
                st = await alice.wait_state(lambda s: len(items(s)) == 4, timeout=30)
                assert items(st)[-1]["text"] == "yes!" and items(st)[-1]["seq"] > seqs[-1]
                for page in (alice, bob):
                    assert (await page.state())["errors"] == []
            finally:
                await alice.close()
                await bob.close()

    run(main(), timeout=180)


def test_a_recipient_away_gets_the_messages_on_return_and_the_sender_sees_ticks_move(
        tmp_path: Path) -> None:
    """Fault: bob's browser is gone (killed) while alice sends. Must hold: alice's messages stay
    at "sent"; bob signs in again from a fresh browser profile (nothing remembered), the
    gateway replays both in seq order, and alice's page turns them read — receipts reach her
    live connection when bob's acks and read mark are recorded."""
    async def main() -> None:
        with delivery_up(tmp_path) as up:
            alice, bob = Page(up.links["alice"]), Page(up.links["bob"])
            try:
                await alice.attach()
                await bob.attach()
                for page in (alice, bob):
                    await page.wait_state(lambda s: s["status"] == "open")
                await say(alice, "before")
                await alice.wait_state(lambda s: [m["tick"] for m in items(s)] == ["read"])
                await bob.close()  # kill -9 of the whole browser
                await say(alice, "while you were away")
                await say(alice, "and again")
                st = await alice.wait_state(
                    lambda s: [m["tick"] for m in items(s)] == ["read", "sent", "sent"])
                bob = Page(up.links["bob"])
                await bob.attach()
                st = await bob.wait_state(lambda s: len(items(s)) == 2, timeout=30)
                assert [m["text"] for m in items(st)] == ["while you were away", "and again"]
                assert not any(m["late"] for m in items(st))
                st = await alice.wait_state(
                    lambda s: [m["tick"] for m in items(s)] == ["read"] * 3, timeout=30)
            finally:
                await alice.close()
                await bob.close()

    run(main(), timeout=180)
