"""The browser client's OrderBuffer (delivery/static/client.js) in headless Chromium makes the
same decisions as delivery/client_order.py on the same inputs: 300 random schedules of frames
(out of order, duplicated, missing, several conversations, holes from other members' seqs),
ticks and resumes, compared step by step."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from delivery.client_order import OrderBuffer, Ready, Skipped
from delivery.store import Store
from tests.delivery.gateway.conftest import gateway_harness, run
from tests.delivery.gateway.test_browser import CHROMIUM, Page
from tests.delivery.gateway.test_browser_keepalive import until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (apt-get install chromium; "
                       ".ci/run installs it)"),
]

Op = list[Any]


def schedule(rng: random.Random) -> tuple[float, dict[str, int], list[Op]]:
    wait = rng.choice([0.0, 0.5, 2.0])
    opts = {"maxHeld": rng.choice([2, 1000]), "maxHoles": rng.choice([1, 64])}
    ops: list[Op] = []
    now = 0.0
    for conv in "ab":
        if rng.random() < 0.5:
            ops.append(["resume", conv, rng.randint(0, 3)])
        mine = sorted(rng.sample(range(1, 25), rng.randint(1, 12)))
        prev = dict(zip(mine, [0, *mine], strict=False))
        for _ in range(rng.randint(0, 20)):
            now += rng.choice([0.0, 0.1, 0.6, 2.5])
            if rng.random() < 0.2:
                ops.append(["tick", now])
            else:
                seq = rng.choice(mine)
                ops.append(["feed", conv, seq, prev[seq], f"{conv}{seq}", now])
    ops.append(["tick", now + 10])
    return wait, opts, ops


def python_run(wait: float, opts: dict[str, int], ops: list[Op]) -> list[Any]:
    buf: OrderBuffer[str] = OrderBuffer(wait, max_held=opts["maxHeld"],
                                        max_holes=opts["maxHoles"])
    results: list[Any] = []

    def norm(out: list[Ready[str] | Skipped]) -> list[dict[str, Any]]:
        return [{"skipped": True, "conversation": o.conversation, "first": o.first,
                 "last": o.last} if isinstance(o, Skipped) else
                {"conversation": o.conversation, "seq": o.seq, "item": o.item, "late": o.late}
                for o in out]

    for op in ops:
        if op[0] == "resume":
            buf.resume(op[1], op[2])
            results.append(None)
        elif op[0] == "tick":
            results.append([norm(buf.tick(op[1])), buf.next_deadline()])
        else:
            fed = buf.feed(op[1], op[2], op[3], op[4], op[5])
            results.append([fed.status, norm(fed.out), buf.next_deadline()])
    return results


BROWSER_RUN = """import("/client.js").then(({ OrderBuffer }) => {
  const runs = %s;
  return JSON.stringify(runs.map(([wait, opts, ops]) => {
    const buf = new OrderBuffer(wait, opts);
    return ops.map((op) => {
      if (op[0] === "resume") { buf.resume(op[1], op[2]); return null; }
      if (op[0] === "tick") return [buf.tick(op[1]), buf.nextDeadline()];
      const fed = buf.feed(op[1], op[2], op[3], op[4], op[5]);
      return [fed.status, fed.out, buf.nextDeadline()];
    });
  }));
})"""


def test_browser_and_python_order_buffers_agree(sqlite_store: Store) -> None:
    rng = random.Random(15)
    runs = [schedule(rng) for _ in range(300)]
    expected = [python_run(*r) for r in runs]

    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            page = Page(f"http://127.0.0.1:{h.gateway.port}/client.js")
            try:
                await page.attach()
                await until(page, "location.pathname === '/client.js'"
                                  " && document.readyState === 'complete'")
                reply = await page.call("Runtime.evaluate", {
                    "expression": BROWSER_RUN % json.dumps(runs), "awaitPromise": True,
                    "returnByValue": True})
                value = reply["result"]["result"].get("value")
                assert value, reply
                got = json.loads(value)
                for i, (r, want, have) in enumerate(zip(runs, expected, got, strict=True)):
                    assert have == want, f"schedule {i} differs: {r}"
            finally:
                await page.close()

    run(main(), timeout=120)
