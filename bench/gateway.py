"""``delivery bench gateway [--json] [--quick]``: what one gateway process holds and moves.

Three measurements, each against a server in its own child process, with the load generated in
this process (so server and clients each get a core on a 2-core machine):

1. **echo**: a bare ``websockets`` echo server (compression off, like the gateway); clients
   keep ``window`` frames outstanding each and count round trips per second. This is the
   ceiling for "one frame out, one frame in" on this machine, measured in the same run.
2. **gateway throughput**: a real :class:`~delivery.gateway.Gateway` (SQLite store in a temp
   dir, or with ``--database-url`` a fresh PostgreSQL database created for the run and dropped
   after it; in-process presence and node channel). A feeder in the gateway process plays routing:
   it publishes a ``deliver`` frame for a stored message on the node channel, and each recorded
   ack (``on_ack`` hook) triggers the next one for that connection. Clients receive ``message``
   frames and ack them; a frame counts when its ack is sent. The store is checked afterwards.
   Routing's own work stays out of the gateway process as far as it would in production: the
   messages are stored in arrival order (users interleaved) and sent oldest first, their
   ``deliver`` frames are serialized beforehand (the gateway only decodes them, as it does from
   Redis), and that prepared state is frozen out of the garbage collector.
3. **connections held**: ``--connections`` clients say hello and stay connected; the gateway
   process' RSS is read from /proc.

1 and 2 run in interleaved rounds (``--rounds``, medians reported), because the machine is
shared: ``ratio`` compares throughputs, ``cpu_ratio`` compares frames per CPU-second of the
server process (robust when other jobs take CPU from either run). The echo clients parse each
frame as JSON, like the gateway clients, so both sides do the same client work.

Progress goes to stderr; ``--json`` prints one object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from statistics import median
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.profiling import MISSING as PY_SPY_MISSING
from bench.profiling import py_spy_exe, record
from delivery.channels import BROADCAST
from delivery.secret import new_secret
from delivery.vocabulary import State

# Random per run (a bench secret is never a published one); the child processes get the
# parent's through the environment.
SECRET = os.environ.get("DELIVERY_BENCH_SECRET") or new_secret()
ECHO_FRAME = json.dumps({
    "type": "message", "id": str(uuid.uuid4()), "from": "alice",
    "body": {"text": "hello, this is a benchmark message"}, "sent_at": "2024-01-01T00:00:00+00:00",
})


def progress(text: str) -> None:
    print(f"bench gateway: {text}", file=sys.stderr, flush=True)


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
    return target


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def bench_database(server_url: str | None, tmp: str) -> Iterator[str]:
    """The store for one gateway child, migrated: SQLite in ``tmp`` without ``server_url``, else
    a fresh PostgreSQL database ``delivery_bench_gw_<hex>`` on that server, dropped afterwards."""
    from delivery import migrate

    if not server_url:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        migrate.upgrade(url)
        yield url
        return
    from workers.devkit.services import fresh_pg_database

    with fresh_pg_database("delivery_bench_gw", server_url) as url:
        migrate.upgrade(url)
        yield url


def store_kind(url: str) -> str:
    return "postgresql" if url.startswith("postgresql") else "sqlite"


# -- child processes ------------------------------------------------------------------------


async def _echo_server() -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        try:
            async for msg in ws:
                await ws.send(msg)
        except ConnectionClosed:
            pass

    async with serve(echo, "127.0.0.1", 0, compression=None, max_size=16 * 1024) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.Event().wait()


async def _gateway_server(db_dir: str, feed: int, url: str) -> None:
    """A gateway on the (migrated) store at ``url`` with a routing stand-in: ``feed`` frames
    outstanding per connection."""
    from delivery.clock import utcnow
    from delivery.db import make_engine
    from delivery.gateway import Gateway, GatewayConfig
    from delivery.gateway.cli import make_presence
    from delivery.runtime import Runtime
    from delivery.settings import Settings
    from delivery.store import Store
    from delivery.store.tables import messages

    settings = Settings(secret=SECRET, data_dir=db_dir, database_url=url)
    store = Store(make_engine(url))
    runtime = Runtime(settings=settings, store=store)
    channel = WireChannel()
    presence = make_presence(settings, "bench-gw")
    presence.start()
    gw = Gateway("bench-gw", runtime, GatewayConfig(replay_tail_s=0, idle_timeout_s=0),
                 presence=presence, channels=channel)
    queues: dict[str, deque[str]] = {}

    def next_for(user: str) -> None:
        q = queues.get(user)
        if q:
            channel.publish_text(q.popleft())

    def on_ack(msg_id: str, conn: str, won: bool) -> None:
        c = gw.conns.get(conn)
        if c is not None:
            next_for(c.user)

    runtime.hooks.on_ack = on_ack
    port = await gw.start("127.0.0.1", 0)
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    # Commands on stdin: "FEED <messages per user>" once every client is connected.
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if not line:
            break
        cmd, _, arg = line.partition(" ")
        if cmd == "FEED":
            per_user = int(arg)
            users = {c.user: c.id for c in gw.conns.values()}
            now = utcnow()
            rows = []
            # Stored in arrival order (users interleaved, like a live chat) and delivered oldest
            # first per user, as routing and replay do: the acks of a batch touch neighbouring
            # rows, not one random page each.
            for i in range(per_user):
                for user in users:
                    q = queues.setdefault(user, deque())
                    mid = uuid.uuid4()
                    body = {"text": "hello, this is a benchmark message", "n": i}
                    rows.append({"id": mid, "sender": "alice", "recipient": user,
                                 "client_msg_id": None, "body": body, "created_at": now,
                                 "expires_at": now + timedelta(hours=1), "state": State.DISPATCHED,
                                 "attempts": 1, "ack_deadline": now + timedelta(hours=1)})
                    q.append(json.dumps({
                        "type": "deliver", "id": str(mid), "user": user, "from": "alice",
                        "body": body, "sent_at": now.isoformat(), "seq": i, "attempt": 1,
                        "conns": [users[user]]}))
            with store.engine.begin() as c:
                for i in range(0, len(rows), 5000):
                    c.execute(messages.insert(), rows[i:i + 5000])
            # The stored frames are routing's state, not the gateway's: keep the collector from
            # walking them (full collections of ~1M objects paused the loop ~0.3 s each).
            gc.collect()
            gc.freeze()
            for user in users:
                for _ in range(feed):
                    next_for(user)
            print("FED", flush=True)
        elif cmd == "COUNT":
            counts = await asyncio.to_thread(store.count_by_state)
            print("COUNT " + json.dumps(counts), flush=True)
        elif cmd == "STATS":
            snap = gw.snapshot()
            snap["feed_left"] = sum(len(q) for q in queues.values())
            print("STATS " + json.dumps(snap), flush=True)
    await gw.stop()
    presence.stop()


class WireChannel:
    """The node channel as a gateway sees it over Redis: routing serialized each frame in its own
    process (here: beforehand, when the messages are stored) and the gateway decodes it."""

    def __init__(self) -> None:
        self.handlers: list[Callable[[dict[str, Any]], None]] = []

    def subscribe(self, node: str, handler: Callable[[dict[str, Any]], None],
                  on_resubscribed: Callable[[], None] | None = None) -> WireChannel:
        if node != BROADCAST:  # the bench sends node frames only
            self.handlers.append(handler)
        return self

    def close(self) -> None:
        self.handlers.clear()

    def publish(self, node: str, frame: dict[str, Any]) -> int:
        for handler in self.handlers:
            handler(frame)
        return len(self.handlers)

    def publish_text(self, text: str) -> None:
        for handler in self.handlers:
            handler(json.loads(text))


@dataclass
class Child:
    proc: subprocess.Popen[str]
    port: int

    def command(self, line: str, expect: str, timeout: float = 120.0) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.proc.stdout.readline()
            if not out:
                raise RuntimeError("bench child exited")
            if out.startswith(expect):
                return out[len(expect):].strip()
        raise TimeoutError(expect)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
                self.proc.wait(15)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.kill()
                self.proc.wait(5)


# The servers' event loop (``--loop``): the same for the echo baseline and the gateway.
LOOP = ["asyncio"]


def _run_server(coro: Any) -> None:
    if os.environ.get("DELIVERY_BENCH_LOOP") == "uvloop":
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)


def spawn(mode: str, *args: str) -> Child:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["DELIVERY_BENCH_SECRET"] = SECRET
    env["DELIVERY_BENCH_LOOP"] = LOOP[0]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.gateway", "--_child", mode, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"bench child {mode} did not start: {line!r}")
    return Child(proc, int(line.split()[1]))


# -- load -----------------------------------------------------------------------------------------


async def open_many(url: str, n: int, hello: bool, parallel: int = 200) -> list[ClientConnection]:
    from delivery.gateway.tokens import issue_token

    sem = asyncio.Semaphore(parallel)
    out: list[ClientConnection] = []
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        async with sem:
            try:
                ws = await connect(url, compression=None, ping_interval=None, open_timeout=30,
                                   max_size=2**20)
                if hello:
                    await ws.send(json.dumps({"type": "hello",
                                              "token": issue_token(f"u{i}", SECRET, 3600)}))
                    welcome = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if welcome.get("type") != "welcome":
                        raise RuntimeError(welcome)
                out.append(ws)
            except (OSError, TimeoutError, RuntimeError, ConnectionClosed):
                failures += 1
        if (i + 1) % 2000 == 0:
            progress(f"  {i + 1}/{n} connections opened")

    await asyncio.gather(*(one(i) for i in range(n)))
    if failures:
        progress(f"  {failures} connections failed")
    return out


async def close_many(conns: list[ClientConnection]) -> None:
    for i in range(0, len(conns), 500):
        await asyncio.gather(*(ws.close() for ws in conns[i:i + 500]), return_exceptions=True)


class Counter:
    def __init__(self) -> None:
        self.n = 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    frames_per_s: float
    server_cores: float
    client_cores: float


def start_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (``--gil``: Python CPU time) on ``pid`` for ``seconds``, raw stacks into ``out``
    (main() has checked that py-spy is there)."""
    exe = py_spy_exe()
    assert exe is not None
    return record(exe, pid, seconds, out)


async def measure(conns: list[ClientConnection], seconds: float, warmup: float, echo: bool,
                  window: int, server_pid: int, outstanding: dict[int, int],
                  profile: Path | None = None) -> Sample:
    """Frames per second: echo round trips (``echo``) or message + ack, with the server's and
    this process' CPU use (cores) over the same interval. Echo clients top up to ``window``
    frames outstanding (``outstanding`` carries the count across rounds). With ``profile``,
    py-spy records the server over the measured interval into that file."""
    counter = Counter()
    stop = asyncio.Event()

    async def echo_client(ws: ClientConnection) -> None:
        key = id(ws)
        while outstanding.get(key, 0) < window:
            await ws.send(ECHO_FRAME)
            outstanding[key] = outstanding.get(key, 0) + 1
        async for raw in ws:
            outstanding[key] -= 1
            frame = json.loads(raw)  # the same client work as for a gateway frame
            counter.n += 1
            if stop.is_set():
                return
            await ws.send(ECHO_FRAME if frame["type"] == "message" else raw)
            outstanding[key] += 1

    async def gateway_client(ws: ClientConnection) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            if frame.get("type") == "message":
                await ws.send('{"type":"ack","id":"' + frame["id"] + '"}')
                counter.n += 1
            if stop.is_set():
                return

    fn = echo_client if echo else gateway_client
    tasks = [asyncio.create_task(fn(ws)) for ws in conns]
    await asyncio.sleep(warmup)
    spy = start_profile(server_pid, seconds, profile) if profile is not None else None
    n0, t0 = counter.n, time.perf_counter()
    s0, c0 = cpu_s(server_pid), cpu_s(os.getpid())
    await asyncio.sleep(seconds)
    n1, t1 = counter.n, time.perf_counter()
    s1, c1 = cpu_s(server_pid), cpu_s(os.getpid())
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if spy is not None:
        await asyncio.to_thread(spy.wait, 60)
    dt = t1 - t0
    return Sample((n1 - n0) / dt, (s1 - s0) / dt, (c1 - c0) / dt)


def write_profile_summaries(spy_dir: Path, rounds: int) -> None:
    """``profile-{echo,gateway}.txt``: every round's raw stacks together, and their summary."""
    from bench.e2e import summarize_profile

    for role in ("echo", "gateway"):
        parts = [spy_dir / f"profile-{role}-{r + 1}.txt" for r in range(rounds)]
        merged = spy_dir / f"profile-{role}.txt"
        merged.write_text("".join(p.read_text() for p in parts if p.exists()))
        for part in parts:
            part.unlink(missing_ok=True)
        (spy_dir / f"profile-{role}-summary.txt").write_text(summarize_profile(merged))
    progress(f"  py-spy profiles of the servers in {spy_dir}")


# -- main ----------------------------------------------------------------------------------------


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"clients": args.clients, "window": args.window,
                              "seconds": args.seconds, "connections_target": args.connections,
                              "store": "postgresql" if args.database_url else "sqlite",
                              "compression": False}
    fd_limit = raise_fd_limit()
    result["fd_limit"] = fd_limit

    # 1+2. Echo baseline and gateway throughput, interleaved rounds (the machine is shared
    # and noisy: each round measures both within seconds of each other; medians reported).
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp, \
            bench_database(args.database_url, tmp) as db_url:
        progress(f"throughput: {args.clients} clients each on a bare echo server and on a "
                 f"gateway ({store_kind(db_url)} store), window {args.window}, {args.rounds} "
                 f"rounds of {args.seconds}s")
        echo = spawn("echo")
        try:
            gw = spawn("gateway", tmp, str(args.window), db_url)
        except BaseException:
            echo.stop()  # no orphan echo server when the gateway child fails to start
            raise
        try:
            echo_conns = await open_many(f"ws://127.0.0.1:{echo.port}/", args.clients,
                                         hello=False)
            conns = await open_many(f"ws://127.0.0.1:{gw.port}/ws", args.clients, hello=True)
            per_user = int(args.expected_rate * (args.rounds * (args.seconds + args.warmup) + 2)
                           / max(1, len(conns))) + args.window + 5
            progress(f"  storing {per_user * len(conns)} messages")
            await asyncio.to_thread(gw.command, f"FEED {per_user}", "FED")
            s0 = json.loads(await asyncio.to_thread(gw.command, "STATS", "STATS "))
            echo_samples: list[Sample] = []
            gw_samples: list[Sample] = []
            outstanding: dict[int, int] = {}
            spy_dir: Path | None = args.py_spy
            for r in range(args.rounds):
                e = await measure(echo_conns, args.seconds, args.warmup, True, args.window,
                                  echo.proc.pid, outstanding,
                                  spy_dir / f"profile-echo-{r + 1}.txt" if spy_dir else None)
                g = await measure(conns, args.seconds, args.warmup, False, args.window,
                                  gw.proc.pid, outstanding,
                                  spy_dir / f"profile-gateway-{r + 1}.txt" if spy_dir else None)
                echo_samples.append(e)
                gw_samples.append(g)
                progress(f"  round {r + 1}: echo {e.frames_per_s:.0f} frames/s "
                         f"({e.server_cores:.2f} cores), gateway {g.frames_per_s:.0f} frames/s "
                         f"({g.server_cores:.2f} cores)")
            s1 = json.loads(await asyncio.to_thread(gw.command, "STATS", "STATS "))
            if spy_dir is not None:
                write_profile_summaries(spy_dir, args.rounds)
            await asyncio.sleep(0.3)
            counts = json.loads(await asyncio.to_thread(gw.command, "COUNT", "COUNT "))
            result["delivered_in_store"] = counts.get(State.DELIVERED, 0)
            result["gateway_rss_mb_throughput"] = round(rss_mb(gw.proc.pid), 1)
            await close_many(echo_conns)
            await close_many(conns)
        finally:
            echo.stop()
            gw.stop()
    result["echo_frames_per_s"] = round(median([x.frames_per_s for x in echo_samples]), 1)
    result["frames_per_s"] = round(median([x.frames_per_s for x in gw_samples]), 1)
    result["ratio"] = round(result["frames_per_s"] / max(1e-9, result["echo_frames_per_s"]), 3)
    result["echo_rounds"] = [round(x.frames_per_s) for x in echo_samples]
    result["gateway_rounds"] = [round(x.frames_per_s) for x in gw_samples]
    result["echo_server_cores"] = round(median([x.server_cores for x in echo_samples]), 2)
    result["gateway_server_cores"] = round(median([x.server_cores for x in gw_samples]), 2)
    result["echo_client_cores"] = round(median([x.client_cores for x in echo_samples]), 2)
    result["gateway_client_cores"] = round(median([x.client_cores for x in gw_samples]), 2)
    # Frames per CPU-second of the server process: robust when other jobs share the machine.
    echo_eff = median([x.frames_per_s / max(0.01, x.server_cores) for x in echo_samples])
    gw_eff = median([x.frames_per_s / max(0.01, x.server_cores) for x in gw_samples])
    result["echo_frames_per_cpu_s"] = round(echo_eff)
    result["gateway_frames_per_cpu_s"] = round(gw_eff)
    result["cpu_ratio"] = round(gw_eff / max(1e-9, echo_eff), 3)
    result["feed_left"] = s1["feed_left"]
    if s1["feed_left"] == 0:
        progress("  WARNING: the stored messages ran out during the run; figures are low")
    batches = max(1, s1["ack_batches"] - s0["ack_batches"])
    acks = max(1, s1["acks"] - s0["acks"])
    result["ack_batch_avg"] = round(acks / batches, 1)
    result["ack_flush_ms_avg"] = round((s1["ack_flush_us"] - s0["ack_flush_us"]) / batches / 1e3, 2)
    result["ack_store_us_per_ack"] = round((s1["ack_flush_us"] - s0["ack_flush_us"]) / acks, 1)
    progress(f"  median: echo {result['echo_frames_per_s']:.0f}, gateway "
             f"{result['frames_per_s']:.0f} frames/s delivered+acked (ratio {result['ratio']}); "
             f"per server CPU-second: echo {result['echo_frames_per_cpu_s']}, gateway "
             f"{result['gateway_frames_per_cpu_s']} (ratio {result['cpu_ratio']}); acks "
             f"recorded in batches of {result['ack_batch_avg']:.0f}, "
             f"{result['ack_store_us_per_ack']:.0f} us of store time per ack; "
             f"{result['delivered_in_store']} delivered in the store")

    # 3. Connections held.
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp, \
            bench_database(args.database_url, tmp) as db_url:
        progress(f"connections held: opening {args.connections}")
        gw = spawn("gateway", tmp, "0", db_url)
        try:
            base_rss = rss_mb(gw.proc.pid)
            t0 = time.perf_counter()
            conns = await open_many(f"ws://127.0.0.1:{gw.port}/ws", args.connections, hello=True)
            elapsed = time.perf_counter() - t0
            await asyncio.sleep(1.0)
            stats = json.loads(await asyncio.to_thread(gw.command, "STATS", "STATS "))
            alive = sum(1 for ws in conns if ws.close_code is None)
            result["connections_held"] = min(alive, int(stats["connections"]))
            result["rss_mb"] = round(rss_mb(gw.proc.pid), 1)
            result["rss_idle_mb"] = round(base_rss, 1)
            held = max(1, result["connections_held"])
            result["rss_per_conn_kb"] = round((result["rss_mb"] - base_rss) * 1024 / held, 1)
            result["connect_per_s"] = round(len(conns) / elapsed, 1)
            await close_many(conns)
        finally:
            gw.stop()
    progress(f"  held {result['connections_held']} connections, gateway RSS "
             f"{result['rss_mb']} MB ({result['rss_per_conn_kb']} KB per connection)")
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="delivery bench gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quick", action="store_true", help="small and short (CI smoke run)")
    parser.add_argument("--connections", type=int, default=None, help="default 10000")
    parser.add_argument("--clients", type=int, default=None, help="default 1000")
    parser.add_argument("--window", type=int, default=4, help="frames outstanding per client")
    parser.add_argument("--seconds", type=float, default=None, help="per round, default 5")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved echo/gateway "
                        "measurements, default 3 (1 with --quick); medians are reported")
    parser.add_argument("--database-url", default=None, metavar="URL",
                        help="PostgreSQL server to put the gateway's store on, e.g. "
                        "postgresql://postgres@127.0.0.1:5432/postgres: a fresh database "
                        "delivery_bench_gw_<hex> is created there, migrated, and dropped after "
                        "the run (default: SQLite in a temp dir, self-contained)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the servers' event loop, for the echo baseline and the gateway "
                        "alike (uvloop: pip install uvloop)")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                        help="record py-spy profiles (--gil) of the echo server and the gateway "
                        "over each measured round into DIR, with summaries "
                        "(pip install py-spy)")
    parser.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.py_spy is not None and py_spy_exe() is None:
        parser.error(f"--py-spy: {PY_SPY_MISSING}")
    if args.database_url and not args.database_url.startswith("postgresql"):
        parser.error("--database-url must be a postgresql:// URL")
    if args._child:
        mode = args._child[0]
        raise_fd_limit()
        if mode == "echo":
            _run_server(_echo_server())
        else:
            _run_server(_gateway_server(args._child[1], int(args._child[2]), args._child[3]))
        return 0
    LOOP[0] = args.loop
    args.connections = args.connections or (2000 if args.quick else 10_000)
    args.clients = args.clients or (200 if args.quick else 1000)
    args.seconds = args.seconds or (1.5 if args.quick else 5.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.warmup = 0.5 if args.quick else 1.5
    args.expected_rate = min(20_000, args.clients * 200)  # frames/s to store messages for
    result = asyncio.run(run_bench(args))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"connections held:  {result['connections_held']} "
              f"(target {args.connections}), gateway RSS {result['rss_mb']} MB")
        print(f"gateway:           {result['frames_per_s']:.0f} frames/s delivered+acked "
              f"({args.clients} connections)")
        print(f"bare echo server:  {result['echo_frames_per_s']:.0f} frames/s")
        print(f"ratio:             {result['ratio']:.2f} (target >= 0.7); per server "
              f"CPU-second {result['cpu_ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
