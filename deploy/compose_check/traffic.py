"""The run itself: clients on the host connected through HAProxy (wss://, the run's dev
certificate), 1,000 messages sent from inside the stack with `delivery.api.send_message`, a
worker stopped and the gateways scaled down while they flow, late clients replayed what waited
for them, and the store asked what became of every message."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from delivery.client import DeliveryClient
from deploy.compose_check.log import CheckFailed, say
from deploy.compose_check.stack import Stack

# Runs inside a worker container (the workers' database and broker settings): sends N messages
# at RATE/s round-robin to the users, one JSON line per accepted message. A send the store
# refused (SendNotAccepted) is retried with the same client_msg_id: stored once.
SENDER = r"""
import json, sys, time
from delivery.api import SendNotAccepted, send_message
n, rate, users, run = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3].split(","), sys.argv[4]
t0 = time.monotonic()
for i in range(n):
    to, frm = users[i % len(users)], users[(i + 1) % len(users)]
    for attempt in range(60):
        try:
            mid = send_message(frm, to, {"text": f"compose-check {i}"}, client_msg_id=f"{run}-{i}")
            break
        except SendNotAccepted as exc:
            print(json.dumps({"retry": i, "error": str(exc)[:200]}), flush=True)
            time.sleep(1)
    else:
        raise SystemExit(f"message {i} not accepted after 60 tries")
    print(json.dumps({"i": i, "id": mid, "to": to}), flush=True)
    delay = t0 + (i + 1) / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
"""


@dataclass
class Result:
    sent: dict[str, str] = field(default_factory=dict)  # message id -> recipient
    received: dict[str, set[str]] = field(default_factory=dict)  # user -> ids shown
    duplicates: int = 0
    reconnects: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    flower_workers: list[str] = field(default_factory=list)
    status_workers: list[str] = field(default_factory=list)
    status_exit: int | None = None
    events: list[str] = field(default_factory=list)

    @property
    def lost(self) -> list[str]:
        return [m for m, to in self.sent.items() if m not in self.received.get(to, set())]


def mint_tokens(stack: Stack, users: list[str]) -> dict[str, str]:
    """`delivery token USER` inside the stack (the gateways' secret and token format), every
    user in one interpreter: the command's own entry point, called once per user."""
    script = ("import contextlib, io, sys\n"
              "from workers.cli import main\n"
              "for u in sys.argv[1:]:\n"
              "    out = io.StringIO()\n"
              "    with contextlib.redirect_stdout(out):\n"
              "        rc = main(['token', u])\n"
              "    if rc != 0:\n"
              "        sys.exit(f'delivery token {u}: exit {rc}')\n"
              "    print(u, out.getvalue().strip())\n")
    res = stack.compose("exec", "-T", "--index", "1", "worker", "python", "-c", script, *users)
    tokens = dict(line.split(" ", 1) for line in res.stdout.strip().splitlines())
    if set(tokens) != set(users):
        raise CheckFailed(f"delivery token: got {len(tokens)} of {len(users)} tokens")
    return tokens


def flower_workers(stack: Stack) -> list[str]:
    """Workers Flower shows (GET /api/workers?refresh=1, basic auth; read-only)."""
    req = urllib.request.Request(f"http://127.0.0.1:{stack.flower_port}/api/workers?refresh=1")
    auth = base64.b64encode(stack.flower_auth.encode()).decode()
    req.add_header("Authorization", f"Basic {auth}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return sorted(data)


def store_states(stack: Stack, result: Result) -> None:
    """`delivery status --json` inside the stack: messages by state in the database, the
    workers answering, and its exit status as a probe (0 = healthy)."""
    res = stack.compose("exec", "-T", "--index", "1", "worker", "delivery", "status", "--json",
                        "--timeout", "3", check=False)
    try:
        data = json.loads(res.stdout)
        result.by_state = {str(k): int(v) for k, v in data["messages"]["by_state"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckFailed(f"delivery status --json: unreadable ({exc}): "
                          f"{(res.stderr or res.stdout)[-300:]}") from exc
    result.status_workers = [w["name"] for w in data.get("workers", {}).get("workers", [])]
    result.status_exit = res.returncode


class Clients:
    def __init__(self, stack: Stack, tokens: dict[str, str], result: Result) -> None:
        self.stack, self.tokens, self.result = stack, tokens, result
        self.clients: dict[str, DeliveryClient] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def connect(self, users: list[str]) -> None:
        for user in users:
            client = DeliveryClient(self.stack.wss_url, self.tokens[user], backoff_max_s=2.0)
            await client.connect(timeout=60)
            self.clients[user] = client
            self.result.received.setdefault(user, set())
            self.tasks.append(asyncio.create_task(self._consume(user, client)))

    async def _consume(self, user: str, client: DeliveryClient) -> None:
        seen = self.result.received[user]
        async for msg in client:  # auto_ack: recorded and acked as it is handed over
            if msg.id in seen:
                self.result.duplicates += 1
            seen.add(msg.id)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for c in self.clients.values():
            self.result.reconnects += max(0, c.stats.connects - 1)
            await c.close()


async def send(stack: Stack, result: Result, n: int, rate: float, users: list[str], run: str,
               at: dict[int, Callable[[], None]]) -> None:
    """Stream the sender's output; call at[k]() (in a thread) once k messages were accepted."""
    argv = stack.compose_cmd("exec", "-T", "--index", "1", "worker", "python", "-", str(n),
                             str(rate), ",".join(users), run)
    from deploy.compose_check import engine
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=engine.env(), cwd=engine.ROOT)
    assert proc.stdin and proc.stdout and proc.stderr
    proc.stdin.write(SENDER.encode())
    proc.stdin.close()
    pending: list[asyncio.Task[None]] = []
    last_report = time.monotonic()
    async for raw in proc.stdout:
        line = json.loads(raw)
        if "retry" in line:
            say(f"send {line['retry']} not accepted yet, retrying: {line['error']}")
            continue
        result.sent[line["id"]] = line["to"]
        k = len(result.sent)
        if k in at:
            pending.append(asyncio.create_task(asyncio.to_thread(at[k])))
        if time.monotonic() - last_report > 5 or k == n:
            got = sum(len(s) for s in result.received.values())
            say(f"sent {k}/{n}, received {got}")
            last_report = time.monotonic()
    err = (await proc.stderr.read()).decode()
    if await proc.wait() != 0:
        raise CheckFailed(f"sender failed: {err.strip()[-400:]}")
    await asyncio.gather(*pending)


async def wait_all_received(result: Result, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while result.lost and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        if time.monotonic() - last > 5:
            say(f"waiting: {len(result.sent) - len(result.lost)}/{len(result.sent)} received")
            last = time.monotonic()


def trust(cert: str) -> None:
    """Clients verify the proxy's certificate against the run's dev certificate."""
    os.environ["SSL_CERT_FILE"] = cert
