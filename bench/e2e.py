"""``delivery bench e2e``: the whole pipeline against raw Celery, in one run.

Starts (or reuses) Redis and PostgreSQL, creates a fresh database and key prefix, starts N
Celery workers, M gateways, the FCM stub and K WebSocket users (in 1-2 ``bench.clients``
subprocesses), then measures, in this order:

1. raw Celery: consumers cancelled, B ``delivery.noop`` tasks pre-filled, consumers resumed, the
   drain timed (queue list and unacked hash empty) -> ``raw_celery_per_s``;
2. the pipeline the same way: B ``delivery.send`` tasks to online users, timed until the clients
   have every message (and acked it) -> ``pipeline_drain_per_s``; ``ratio`` = pipeline / raw;
3. offered-load steps paced from this process, as fractions of the pipeline drain rate; the
   highest step where every message was acked within 1 s -> ``acked_per_s``;
4. enqueue->ack latency at 50 % and 90 % of that rate (``latency_ms`` is the 50 % one);
5. push: B' messages to offline users with a registered device, against the FCM stub, timed
   until every one is ``pushed`` -> ``push_per_s``;
6. lost (every sent message must end ``delivered`` or ``pushed``) and duplicate outcomes (two
   ``acked`` attempt rows for one message, or one device pushed twice for one message).

Phases 2-4 form the measured window of ``broker_round_trips_per_message`` (Redis
``INFO commandstats`` call deltas, every command but INFO, per delivered message) and
``db_writes_per_message`` (``pg_stat_database`` deltas of the bench database: commits, and
inserted + updated tuples, per delivered message).

Progress goes to stderr; ``--json`` prints one object on stdout; the JSON and a PNG plot are
written to ``--out`` (default ``bench/results``). Every process started is stopped and the
database and key prefix are removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
import redis

from bench.e2e_measure import ONLINE, cpu_by_pid, cpu_delta_ms, pg_counters, progress
from bench.e2e_parts import SENDER_THREADS, STOP, ClientProcs, check_stop, lat_summary
from bench.profiling import MISSING as PY_SPY_MISSING
from bench.profiling import py_spy_exe, record
from delivery.secret import new_secret
from delivery.task_names import NOOP_TASK
from delivery.vocabulary import Result, State
from workers.devkit.procs import ROOT, wait_until
from workers.devkit.services import (
    PG_ADMIN_URL,
    REDIS_URL,
    PrivateRedis,
    ServiceEnv,
    clear_redis_prefix,
    create_database,
    drop_database,
    pg_answers,
    redis_answers,
    with_database,
)

SENDER = "bench-sender"
OFFLINE = "bench-off"
SECRET = new_secret()  # random per run; children get it as DELIVERY_SECRET
@dataclass(frozen=True)
class Params:
    workers: int = 2
    gateways: int = 2
    clients: int = 200
    concurrency: int = 8
    drain_n: int = 2000
    step_s: float = 5.0
    fractions: tuple[float, ...] = (0.5, 0.7, 0.85, 1.0, 1.15, 1.3)
    latency_step_s: float = 10.0
    push_users: int = 100
    push_n: int = 500
    settle_s: float = 2.0
    # The per-batch-size counts: a drain of sweep_n sends at each batch limit.
    batch_limits: tuple[int, ...] = (1, 4, 16, 64)
    sweep_n: int = 600

    @classmethod
    def quick(cls, **kw: Any) -> Params:
        base = cls(drain_n=500, step_s=2.0, fractions=(0.7, 0.9, 1.05), latency_step_s=3.0,
                   push_users=30, push_n=120, settle_s=1.5, sweep_n=300)
        return cls(**{**asdict(base), **kw})


def tiny_params(**kw: Any) -> Params:
    """The smoke test's run: a handful of messages per phase, one load step."""
    base = Params.quick(drain_n=100, step_s=1.0, fractions=(0.8,), latency_step_s=1.0,
                        push_users=5, push_n=20, settle_s=1.0, batch_limits=(1, 8),
                        sweep_n=40)
    return Params(**{**asdict(base), **kw})


# -- services ---------------------------------------------------------------------------------


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    if not wait_until(cond, timeout, interval=0.2):
        raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


def ensure_services(redis_url: str, pg_admin_url: str) -> None:
    """Reuse Redis and PostgreSQL if they answer, start the local ones if not."""
    if not redis_answers(redis_url):
        progress("starting redis-server")
        subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port",
                        "6379", "--save", "", "--appendonly", "no"], check=True)
        _wait(lambda: redis_answers(redis_url), 15, "Redis")
    if not pg_answers(pg_admin_url):
        progress("starting PostgreSQL")
        versions = sorted(os.listdir("/etc/postgresql"))
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main",
                        "start"], check=True)
        _wait(lambda: pg_answers(pg_admin_url), 30, "PostgreSQL")




# -- counters -----------------------------------------------------------------------------------


def redis_calls(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    out: Counter[str] = Counter()
    for key, value in stats.items():
        name = key.removeprefix("cmdstat_")
        if name in ("info",):
            continue
        out[name] = int(value["calls"])
    return out


# -- the benchmark --------------------------------------------------------------------------------


class Bench:
    def __init__(self, params: Params, *, private_redis: bool, py_spy: Path | None,
                 peer: bool = True, role_env: dict[str, str] | None = None,
                 max_backlog: int = 0, overload: float = 0.0,
                 worker_args: tuple[str, ...] = ()) -> None:
        from celery import Celery

        self.p = params
        self.role_env = dict(role_env or {})  # extra DELIVERY_* for workers and gateways
        self.worker_args = worker_args  # extra `celery worker` arguments
        self.max_backlog = max_backlog  # the producers' bound in the paced steps (0: off)
        self.overload = overload  # an extra paced step at this fraction of the drain rate
        self.refused: Counter[str] = Counter()  # phase -> sends refused (Overloaded)
        self.peer = peer
        self.private_redis = private_redis
        self.py_spy = py_spy
        self.tag = uuid.uuid4().hex[:10]
        self.key_prefix = f"bench-{self.tag}"
        self.pg_admin = PG_ADMIN_URL
        self.db_url = ""  # this run's own database, dropped by teardown
        self.redis_srv: PrivateRedis | None = None
        self.cluster: Any = None
        self.clients: ClientProcs | None = None
        self.app: Celery | None = None
        self.engine: Any = None
        self.sent: dict[str, tuple[str, float]] = {}  # message id -> (phase, enqueue wall time)
        self.fcm_url = ""
        self.result: dict[str, Any] = {}
        self.profiles: list[subprocess.Popen[bytes]] = []
        self.profile_s = 8.0
        self.cpu_ms: dict[str, dict[str, float]] = {}
        self.drain_batches: dict[str, Any] = {}

    @property
    def dbname(self) -> str:
        return self.db_url.rpartition("/")[2]

    # -- setup / teardown ---------------------------------------------------------------------

    def setup(self) -> None:
        from delivery import migrate
        from delivery.celery_app import make_app
        from delivery.db import make_engine
        from delivery.settings import Settings
        from workers.devkit.cluster import LocalCluster

        redis_url = os.environ.get("DELIVERY_REDIS_URL") or REDIS_URL
        db_url = os.environ.get("DELIVERY_DATABASE_URL")
        if db_url:
            self.pg_admin = with_database(db_url, "postgres")
        ensure_services(redis_url if not self.private_redis else REDIS_URL, self.pg_admin)
        if self.private_redis:
            self.redis_srv = PrivateRedis(appendonly=False)
            self.redis_srv.start()
            redis_url = self.redis_srv.url
        self.db_url = create_database("delivery_bench", self.pg_admin)
        self.redis_url = redis_url
        progress(f"database {self.dbname}, key prefix {self.key_prefix}, redis {redis_url}")
        migrate.upgrade(self.db_url)
        env = ServiceEnv(self.db_url, redis_url, self.key_prefix, SECRET).env(**self.role_env)
        self.env = env
        self.settings = Settings.from_env(env)
        self.app = make_app(self.settings)
        self.engine = make_engine(self.db_url)
        self.redis = redis.Redis.from_url(redis_url)
        self.cluster = LocalCluster(env)
        self.fcm_url = self.cluster.start_fcm_stub()
        self.cluster.with_env({"DELIVERY_FCM_URL": self.fcm_url, "DELIVERY_FCM_PROJECT": "bench"})
        progress(f"FCM stub at {self.fcm_url}; starting {self.p.gateways} gateways, "
                 f"{self.p.workers} workers")
        threads = [threading.Thread(target=self.cluster.start_gateway, args=(f"gw-{i}",))
                   for i in range(self.p.gateways)]
        threads += [threading.Thread(target=self.cluster.start_worker, args=(f"w{i}",),
                                     kwargs={"concurrency": self.p.concurrency,
                                             "extra": self.worker_args})
                    for i in range(self.p.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if (len(self.cluster.gateways) != self.p.gateways
                or len(self.cluster.workers) != self.p.workers):
            raise RuntimeError("some roles failed to start (see the logs above)")
        urls = [gw.url for gw in self.cluster.gateways.values()]
        nprocs = 1 if self.p.clients <= 100 else 2
        progress(f"connecting {self.p.clients} clients from {nprocs} processes")
        self.clients = ClientProcs(urls, self.p.clients, nprocs, env, prefix=ONLINE)
        n = self.clients.wait_ready(60)
        progress(f"{n} clients connected")

    def teardown(self) -> None:
        if self.clients is not None:
            with contextlib.suppress(Exception):
                self.clients.stop()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.stop()
        if self.app is not None:
            with contextlib.suppress(Exception):
                self.app.close()
        if self.engine is not None:
            with contextlib.suppress(Exception):
                self.engine.dispose()
        if self.redis_srv is not None:
            self.redis_srv.stop()
        elif getattr(self, "redis", None) is not None:
            with contextlib.suppress(Exception):
                n = clear_redis_prefix(self.redis_url, f"{self.key_prefix}:")
                progress(f"removed {n} keys under {self.key_prefix}:")
        if self.db_url:
            with contextlib.suppress(Exception):
                drop_database(self.db_url, self.pg_admin)
                progress(f"dropped {self.dbname}")

    # -- sending --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def producer(self) -> Iterator[Callable[[str, str, str], str]]:
        """Sends the way the chat application does: ``delivery.api.send_message``; a send
        refused by flow control (``Overloaded``) is counted and answers ""."""
        from delivery.api import Overloaded, send_message

        assert self.app is not None
        app = self.app

        def send(phase: str, recipient: str, cmid: str) -> str:
            check_stop()
            t = time.time()
            try:
                mid = send_message(SENDER, recipient, {"t": t}, client_msg_id=cmid, app=app)
            except Overloaded:
                self.refused[phase] += 1
                return ""
            self.sent[mid] = (phase, t)
            return mid

        yield send

    def role_pids(self) -> dict[str, list[int]]:
        """Processes whose CPU time is charged to a phase, by role."""
        roles: dict[str, list[int]] = {"bench": [os.getpid()]}
        if self.cluster is not None:
            roles["workers"] = [p.popen.pid for p in self.cluster.workers.values()]
            roles["gateways"] = [g.proc.popen.pid for g in self.cluster.gateways.values()]
        if self.clients is not None:
            roles["clients"] = [p.pid for p in self.clients.procs]
        with contextlib.suppress(Exception):
            roles["redis"] = [int(self.redis.info("server")["process_id"])]
        with contextlib.suppress(Exception), psycopg.connect(self.pg_admin, autocommit=True) as c:
            rows = c.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s",
                             (self.dbname,)).fetchall()
            roles["postgres"] = [int(r[0]) for r in rows]
        return roles

    def batch_stats(self) -> dict[str, Counter[str]]:
        """The workers' ``delivery.send`` batch counters, summed (``send_batch_stats``)."""
        assert self.app is not None
        out: dict[str, Counter[str]] = {"sizes": Counter(), "paths": Counter()}
        with contextlib.suppress(Exception):
            for reply in self.app.control.broadcast("send_batch_stats", reply=True,
                                                    timeout=1.0, limit=self.p.workers):
                for stats in reply.values():
                    out["sizes"].update({k: int(v) for k, v in stats["sizes"].items()})
                    out["paths"].update(completed=int(stats["completed"]),
                                        per_message=int(stats["per_message"]))
        return out

    @staticmethod
    def batch_delta(before: dict[str, Counter[str]],
                    after: dict[str, Counter[str]]) -> dict[str, Any]:
        """Batches run between two ``batch_stats``: how many, their sizes, and how many
        requests a batch completed vs. the per-message task."""
        sizes = after["sizes"] - before["sizes"]
        paths = after["paths"] - before["paths"]
        n = sum(sizes.values())
        reqs = sum(int(k) * v for k, v in sizes.items())
        return {"batches": n, "mean_size": round(reqs / n, 2) if n else 0.0,
                "max_size": max((int(k) for k in sizes), default=0),
                "sizes": {k: sizes[k] for k in sorted(sizes, key=int)},
                "completed_in_batch": paths["completed"], "per_message": paths["per_message"]}

    def queue_len(self) -> int:
        base = f"{self.key_prefix}:celery:"
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(base + "celery")
            pipe.hlen(base + "unacked")
            q, u = pipe.execute()
        return int(q) + int(u)

    def pause(self) -> None:
        assert self.app is not None
        replies = self.app.control.cancel_consumer("celery", reply=True, timeout=3.0)
        if len(replies) < self.p.workers:
            raise RuntimeError(f"cancel_consumer: {len(replies)} of {self.p.workers} replied")

    def resume(self) -> float:
        assert self.app is not None
        t = time.time()
        self.app.control.add_consumer("celery", reply=False)
        return t

    def wait_received(self, ids: list[str], timeout: float) -> bool:
        assert self.clients is not None
        return self.clients.received.wait_for(ids, timeout)

    def recv_wall(self, mid: str) -> float:
        """Wall-clock time the client had (and acked) message ``mid``."""
        assert self.clients is not None
        return self.sent[mid][1] + self.clients.received.latency_ms[mid] / 1000.0

    # -- phases ---------------------------------------------------------------------------------

    def warmup(self) -> None:
        progress("warm-up: one message per user (presence converged, paths warm)")
        time.sleep(max(1.0, self.settings.presence_heartbeat_s * 4))
        with self.producer() as send:
            ids = [send("warmup", f"{ONLINE}{i}", f"warm-{i}") for i in range(self.p.clients)]
        if not self.wait_received(ids, 30):
            raise RuntimeError("warm-up messages not all delivered within 30 s")

    def raw_drain(self) -> float:
        assert self.app is not None
        n = self.p.drain_n
        self.pause()
        progress(f"raw Celery: pre-filling {n} delivery.noop tasks")
        with self.app.producer_or_acquire() as prod:
            for _ in range(n):
                check_stop()
                self.app.send_task(NOOP_TASK, producer=prod)
        roles = self.role_pids()
        cpu0 = cpu_by_pid(roles)
        t0 = self.resume()
        deadline = time.monotonic() + 120
        while self.queue_len() > 0:
            if time.monotonic() > deadline:
                raise RuntimeError("raw drain did not finish in 120 s")
            check_stop()
            time.sleep(0.005)
        rate = n / (time.time() - t0)
        self.cpu_ms["raw_drain"] = cpu_delta_ms(cpu0, cpu_by_pid(roles), n)
        progress(f"raw Celery: {rate:.0f} tasks/s")
        return rate

    def pipeline_drain(self) -> float:
        n = self.p.drain_n
        self.pause()
        progress(f"pipeline: pre-filling {n} delivery.send tasks to online users")
        with self.producer() as send:
            ids = [send("drain", f"{ONLINE}{i % self.p.clients}", f"drain-{i}")
                   for i in range(n)]
        roles = self.role_pids()
        cpu0 = cpu_by_pid(roles)
        b0 = self.batch_stats()
        t0 = self.resume()
        self.profiles = self.start_profiles(self.profile_s)
        if not self.wait_received(ids, 120):
            raise RuntimeError("pipeline drain: not every message acked within 120 s")
        t_end = max(self.recv_wall(i) for i in ids)
        rate = n / (t_end - t0)
        time.sleep(0.1)  # the gateways' ack batches
        self.cpu_ms["pipeline_drain"] = cpu_delta_ms(cpu0, cpu_by_pid(roles), n)
        self.drain_batches = self.batch_delta(b0, self.batch_stats())
        progress(f"pipeline: {rate:.0f} acked/s draining a backlog; send batches: "
                 f"{self.drain_batches['batches']}, mean size "
                 f"{self.drain_batches['mean_size']}")
        return rate

    def set_batch_limit(self, limit: int) -> None:
        """Every worker's largest ``delivery.send`` batch (0: back to the configured one)."""
        assert self.app is not None
        replies = self.app.control.broadcast("send_batch_limit", arguments={"max_batch": limit},
                                             reply=True, timeout=3.0, limit=self.p.workers)
        if len(replies) < self.p.workers:
            raise RuntimeError(f"send_batch_limit: {len(replies)} of {self.p.workers} replied")

    def batch_sweep(self) -> dict[str, dict[str, Any]]:
        """Per-message counts at each batch limit: a backlog of ``sweep_n`` sends drained with
        the workers' batches capped at the limit (a backlog fills every batch up to it, or to
        the prefetch window), counted like the main window: broker round trips and commands,
        database tuple writes and commits, CPU by role, and the batches actually run."""
        out: dict[str, dict[str, Any]] = {}
        n = self.p.sweep_n
        try:
            for limit in self.p.batch_limits:
                check_stop()
                self.set_batch_limit(limit)
                self.pause()
                with self.producer() as send:
                    ids = [send(f"sweep{limit}", f"{ONLINE}{i % self.p.clients}",
                                f"sweep{limit}-{i}") for i in range(n)]
                time.sleep(1.2)  # PostgreSQL's statistics of the pre-fill settle
                roles = self.role_pids()
                r0, pg0 = redis_calls(self.redis), pg_counters(self.pg_admin, self.dbname)
                cpu0, b0 = cpu_by_pid(roles), self.batch_stats()
                t0 = self.resume()
                if not self.wait_received(ids, 120):
                    raise RuntimeError(f"batch sweep {limit}: not every message acked in 120 s")
                rate = n / (max(self.recv_wall(i) for i in ids) - t0)
                time.sleep(1.2)  # the gateways' ack batches; PostgreSQL flushes its statistics
                cpu = cpu_delta_ms(cpu0, cpu_by_pid(roles), n)
                calls = redis_calls(self.redis) - r0
                db = {k: v - pg0[k] for k, v in pg_counters(self.pg_admin, self.dbname).items()}
                batches = self.batch_delta(b0, self.batch_stats())
                out[str(limit)] = {
                    "limit": limit, "mean_size": batches["mean_size"],
                    "max_size": batches["max_size"], "drain_per_s": round(rate, 1),
                    **per_message_counts(calls, db, n), "cpu_ms_per_message": cpu}
                progress(f"batch limit {limit}: mean batch {batches['mean_size']}, "
                         f"{rate:.0f} acked/s, CPU {cpu['total']:.2f} ms/message (workers "
                         f"{cpu.get('workers', 0):.2f}), commits "
                         f"{out[str(limit)]['db_commits_per_message']}/message")
        finally:
            with contextlib.suppress(Exception):
                self.set_batch_limit(0)
        return out

    def paced_step(self, phase: str, rate: float, duration: float) -> dict[str, Any]:
        assert self.clients is not None
        n = max(1, int(rate * duration))
        slots: list[str] = [""] * n
        b0 = self.batch_stats()
        t0 = time.monotonic() + 0.01

        def pace(k: int) -> None:
            # Message i leaves at t0 + i / rate; SENDER_THREADS threads share the schedule so a
            # slow enqueue (the machine is shared) does not hold the next ones back.
            with self.producer() as send:
                for i in range(k, n, SENDER_THREADS):
                    delay = t0 + i / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    slots[i] = send(phase, f"{ONLINE}{i % self.p.clients}", f"{phase}-{i}")

        senders = [threading.Thread(target=pace, args=(k,)) for k in range(SENDER_THREADS)]
        for th in senders:
            th.start()
        for th in senders:
            th.join()
        send_s = time.monotonic() - t0
        ids = [i for i in slots if i]
        complete = self.wait_received(ids, 1.0 + self.p.settle_s)
        got = self.clients.received
        with got.lock:
            lats = [got.latency_ms[i] for i in ids if i in got.latency_ms]
            queued = [got.queue_ms[i] for i in ids if i in got.queue_ms]
            routed = [got.latency_ms[i] - got.queue_ms[i] for i in ids if i in got.queue_ms]
        first = self.sent[ids[0]][1] if ids else time.time()
        done = [self.recv_wall(i) for i in ids if i in got.latency_ms]
        span = (max(done) - first) if done else float("inf")
        sustained = complete and bool(lats) and max(lats) <= 1000.0
        step = {"phase": phase, "offered_per_s": round(rate, 1),
                "sent_per_s": round(n / send_s if send_s > 0 else rate, 1), "n": n,
                # Sustained (every message acked within 1 s): the acked rate is the send rate;
                # the first-send -> last-ack span also counts the last message's latency.
                "acked": len(lats),
                "acked_per_s": round(len(lats) / max(send_s, 1e-9), 1) if sustained else (
                    round(len(lats) / span, 1) if done else 0.0),
                "acked_span_per_s": round(len(lats) / span, 1) if done else 0.0,
                "sustained": sustained, "latency_ms": lat_summary(lats),
                # enqueue -> accepted by the send task (broker + Celery), accepted -> acked
                # (store, publish, gateway, WebSocket, client); the worker's clock is the same.
                "queue_ms": lat_summary(queued), "route_ms": lat_summary(routed),
                "send_batches": self.batch_delta(b0, self.batch_stats()),
                "refused": self.refused[phase]}
        if not complete:  # let the backlog drain before the next step
            self.wait_received(ids, 30)
        return step

    def load_steps(self, drain_rate: float) -> tuple[float, list[dict[str, Any]]]:
        steps: list[dict[str, Any]] = []
        best = 0.0
        fractions = list(self.p.fractions)
        i = 0
        while i < len(fractions):
            f = fractions[i]
            rate = drain_rate * f
            step = self.paced_step(f"load{i}", rate, self.p.step_s)
            step["fraction_of_drain"] = f
            steps.append(step)
            lat = step["latency_ms"]
            progress(f"offered {rate:.0f}/s ({f:.2f} x drain, sent {step['sent_per_s']:.0f}/s): "
                     f"acked {step['acked_per_s']:.0f}/s "
                     f"p50 {lat['p50']:.1f} ms p99 {lat['p99']:.1f} ms max {lat['max']:.0f} ms "
                     f"{'sustained' if step['sustained'] else 'NOT sustained'}")
            if step["sustained"]:
                best = max(best, min(step["acked_per_s"], step["sent_per_s"]))
            elif best == 0.0 and f > 0.2:
                fractions.insert(i + 1, f / 2)  # nothing sustained yet: try lower
            else:
                break
            i += 1
        return best, steps

    def push_phase(self) -> dict[str, Any]:
        from delivery.clock import utcnow
        from delivery.store import Store

        store = Store(self.engine)
        now = utcnow()
        for i in range(self.p.push_users):
            store.register_device(f"{OFFLINE}{i}", f"bench-tok-{self.tag}-{i}", "android", now)
        n = self.p.push_n
        self.pause()
        progress(f"push: pre-filling {n} delivery.send tasks to offline users with a device")
        with self.producer() as send:
            ids = [send("push", f"{OFFLINE}{i % self.p.push_users}", f"push-{i}")
                   for i in range(n)]
        t0 = self.resume()
        deadline = time.monotonic() + 60
        pushed = 0
        while time.monotonic() < deadline:
            pushed = self._count_states(ids).get(State.PUSHED, 0)
            if pushed == n:
                break
            check_stop()
            time.sleep(0.02)
        elapsed = time.time() - t0
        rate = pushed / elapsed
        progress(f"push: {pushed}/{n} pushed, {rate:.0f} pushed/s "
                 f"(includes the {self.settings.offline_grace_s:.2f} s offline grace)")
        return {"push_per_s": round(rate, 1), "push_n": n, "pushed": pushed,
                "push_elapsed_s": round(elapsed, 3)}

    def _count_states(self, ids: list[str]) -> dict[str, int]:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT state, count(*) FROM messages WHERE id = ANY(%s::uuid[]) GROUP BY state",
                (ids,)).fetchall()
        return {s: int(c) for s, c in rows}

    def outcomes(self) -> dict[str, Any]:
        ids = list(self.sent)
        online = [i for i, (ph, _) in self.sent.items() if ph != "push"]
        offline = [i for i, (ph, _) in self.sent.items() if ph == "push"]
        deadline = time.monotonic() + 10
        while True:
            with psycopg.connect(self.db_url, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT id::text, state FROM messages WHERE id = ANY(%s::uuid[])",
                    (ids,)).fetchall()
            state: dict[str, str] = {str(a): str(b) for a, b in rows}
            ok_online = sum(1 for i in online if state.get(i) == State.DELIVERED)
            ok_offline = sum(1 for i in offline if state.get(i) in (State.PUSHED, State.DELIVERED))
            if ok_online + ok_offline == len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            dup_acks = conn.execute(
                "SELECT count(*) FROM (SELECT message_id FROM delivery_attempts "
                f"WHERE result = '{Result.ACKED}' GROUP BY message_id HAVING count(*) > 1) d"
            ).fetchone()
        with urllib.request.urlopen(f"{self.fcm_url}/_requests", timeout=10) as resp:
            sends = json.load(resp)
        pairs: Counter[tuple[str, str]] = Counter()
        for s in sends:
            msg = (s.get("body") or {}).get("message") or {}
            pairs[((msg.get("data") or {}).get("message_id", ""), str(s.get("token")))] += 1
        dup_push = sum(1 for c in pairs.values() if c > 1)
        assert self.clients is not None
        not_received = sum(1 for i in online if i not in self.clients.received.latency_ms)
        by_state = Counter(state.get(i, "missing") for i in ids)
        return {
            "sent": len(ids), "lost": len(ids) - ok_online - ok_offline,
            "duplicate_outcomes": int(dup_acks[0] if dup_acks else 0) + dup_push,
            "duplicate_acked_rows": int(dup_acks[0] if dup_acks else 0),
            "duplicate_device_pushes": dup_push, "fcm_sends": len(sends),
            "online_not_seen_by_clients": not_received,
            "wire_repeats_seen_by_clients": self.clients.received.repeats,
            "final_states": dict(by_state),
        }

    def peer_phase(self, rate50: float, rate90: float, drain: float) -> dict[str, Any]:
        """The Socket.IO peer (bench/peer_socketio), measured after ours with our roles
        stopped (so it has the same CPU): its drain, and its latency at the offered rates of
        our 50 % and 90 % steps."""
        if not self.peer:
            return {}
        from bench.peer_socketio.run import measure

        if self.clients is not None:
            self.clients.stop()
            self.clients = None
        if self.cluster is not None:
            self.cluster.stop()
        progress("peer: starting python-socketio servers and Celery workers")
        out = measure(self.redis_url, clients=self.p.clients, workers=self.p.workers,
                      concurrency=self.p.concurrency, drain_n=self.p.drain_n,
                      latency_rates={"at_our_50pct": rate50, "at_our_90pct": rate90},
                      latency_s=self.p.latency_step_s)
        out["ratio_vs_peer"] = round(drain / out["peer_socketio_per_s"], 3)
        return out

    # -- py-spy ------------------------------------------------------------------------------

    def start_profiles(self, duration: float) -> list[subprocess.Popen[bytes]]:
        if self.py_spy is None or self.cluster is None:
            return []
        exe = py_spy_exe()
        if exe is None:
            return []
        self.py_spy.mkdir(parents=True, exist_ok=True)
        targets = {"worker": next(iter(self.cluster.workers.values())).popen.pid,
                   "gateway": next(iter(self.cluster.gateways.values())).proc.popen.pid}
        procs = [record(exe, pid, duration, self.py_spy / f"profile-{role}.txt")
                 for role, pid in targets.items()]
        progress(f"py-spy recording {', '.join(targets)} for {duration:.0f} s")
        return procs

    # -- the run ------------------------------------------------------------------------------

    def run_group(self, size: int, messages: int) -> dict[str, Any]:
        """``--group``: only the group case (bench/e2e_group.py) after the warm-up."""
        from bench.e2e_group import run_group

        started = time.monotonic()
        self.setup()
        self.warmup()
        self.result = run_group(self, size=size, messages=messages)
        self.result["config"] = {"workers": self.p.workers, "gateways": self.p.gateways,
                                 "clients": self.p.clients, "concurrency": self.p.concurrency,
                                 "cpus": os.cpu_count()}
        self.result["elapsed_s"] = round(time.monotonic() - started, 1)
        return self.result

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.setup()
        self.warmup()
        raw = self.raw_drain()
        time.sleep(0.3)
        r0, pg0 = redis_calls(self.redis), pg_counters(self.pg_admin, self.dbname)
        measured_from = len(self.sent)
        self.profile_s = max(8.0, self.p.step_s * (len(self.p.fractions) + 1))
        drain = self.pipeline_drain()
        self.bound_producers(self.max_backlog)
        best, steps = self.load_steps(drain)
        if best <= 0:
            best = drain * 0.25
        lat50 = self.paced_step("lat50", best * 0.5, self.p.latency_step_s)
        lat90 = self.paced_step("lat90", best * 0.9, self.p.latency_step_s)
        progress(f"at 50 % ({best * 0.5:.0f}/s): {lat50['latency_ms']}")
        progress(f"at 90 % ({best * 0.9:.0f}/s): {lat90['latency_ms']}")
        over = None
        if self.overload > 0:
            over = self.paced_step("over", drain * self.overload, self.p.latency_step_s)
            progress(f"overload ({drain * self.overload:.0f}/s offered): accepted "
                     f"{over['acked']}, refused {over['refused']}: {over['latency_ms']}")
        self.bound_producers(0)
        time.sleep(1.2)  # PostgreSQL backends flush their statistics within ~1 s of going idle
        r1, pg1 = redis_calls(self.redis), pg_counters(self.pg_admin, self.dbname)
        for p in self.profiles:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(30)
        if self.py_spy is not None:
            for role in ("worker", "gateway"):
                raw_prof = self.py_spy / f"profile-{role}.txt"
                if raw_prof.exists():
                    (self.py_spy / f"profile-{role}-summary.txt").write_text(
                        summarize_profile(raw_prof))
        measured = len(self.sent) - measured_from
        calls = r1 - r0
        db = {k: pg1[k] - pg0[k] for k in pg0}
        by_batch_size = self.batch_sweep()
        push = self.push_phase()
        outcomes = self.outcomes()
        peer = self.peer_phase(lat50["offered_per_s"], lat90["offered_per_s"], drain)
        counts = per_message_counts(calls, db, measured)
        self.result = {
            "acked_per_s": round(best, 1),
            "raw_celery_per_s": round(raw, 1),
            "pipeline_drain_per_s": round(drain, 1),
            "ratio": round(drain / raw, 3),
            "ratio_sustained": round(best / raw, 3),
            "latency_ms": lat50["latency_ms"],
            "latency_ms_at_50pct": lat50["latency_ms"],
            "latency_ms_at_90pct": lat90["latency_ms"],
            "latency_split_at_50pct": {"queue_ms": lat50["queue_ms"],
                                       "route_ms": lat50["route_ms"]},
            "latency_split_at_90pct": {"queue_ms": lat90["queue_ms"],
                                       "route_ms": lat90["route_ms"]},
            "rate_at_50pct": lat50["offered_per_s"],
            "rate_at_90pct": lat90["offered_per_s"],
            **push,
            "lost": outcomes["lost"],
            "duplicate_outcomes": outcomes["duplicate_outcomes"],
            **peer,
            "broker_round_trips_per_message": counts["broker_round_trips_per_message"],
            "broker_commands_per_message": counts["broker_commands_per_message"],
            "cpu_ms_per_message": self.cpu_ms,
            "broker_calls_by_command_per_message": {
                k: round(v / measured, 3) for k, v in calls.most_common() if v > 0},
            "broker_counted": ("Redis INFO commandstats call deltas (every command except INFO, "
                               "all clients of the server) over the pipeline drain, load steps "
                               "and latency steps, divided by the messages sent in them; "
                               "commands per message counts every call, round trips count "
                               "each MULTI...EXEC pipeline (ZADD/HSET/ZREM/HDEL/EXEC inside) "
                               "once"
                               + ("; private redis-server, so only this run" if self.private_redis
                                  else "; shared Redis, other clients included")),
            "db_writes_per_message": counts["db_writes_per_message"],
            "db_commits_per_message": counts["db_commits_per_message"],
            "db_counters": db,
            "db_counted": ("pg_stat_database deltas of the bench database over the same window: "
                           "db_writes_per_message = (tup_inserted + tup_updated) / messages, "
                           "db_commits_per_message = xact_commit / messages"),
            "measured_messages": measured,
            "send_batches_in_drain": self.drain_batches,
            "per_batch_size": by_batch_size,
            "send_batches_by_step": {s["phase"]: s["send_batches"] for s in [*steps, lat50, lat90]},
            "steps": [*steps, lat50, lat90],
            "max_backlog": self.max_backlog,
            "refused_by_step": dict(self.refused),
            **({"overload_step": over} if over is not None else {}),
            "outcomes": outcomes,
            "config": {"workers": self.p.workers, "gateways": self.p.gateways,
                       "clients": self.p.clients, "pool": "threads",
                       "concurrency": self.p.concurrency, "drain_n": self.p.drain_n,
                       "step_s": self.p.step_s, "latency_step_s": self.p.latency_step_s,
                       "private_redis": self.private_redis, "cpus": os.cpu_count()},
            "elapsed_s": round(time.monotonic() - started, 1),
        }
        if self.role_env:
            self.result["config"]["role_env"] = self.role_env
        if self.worker_args:
            self.result["config"]["worker_args"] = list(self.worker_args)
        return self.result

    def bound_producers(self, max_backlog: int) -> None:
        """This process's producers refuse sends past ``max_backlog`` queued tasks (0: off):
        on for the paced steps only, so the pre-filled drains are never refused."""
        from delivery import flow_gate
        from delivery.settings import reset_settings

        if max_backlog > 0:
            os.environ["DELIVERY_MAX_BACKLOG"] = str(max_backlog)
        else:
            os.environ.pop("DELIVERY_MAX_BACKLOG", None)
        reset_settings()
        flow_gate.reset()


def per_message_counts(calls: Counter[str], db: dict[str, int], n: int) -> dict[str, float]:
    """Broker and database counts over a window of ``n`` messages: Redis command calls
    (``calls``: every command but INFO) and ``pg_stat_database`` deltas (``db``)."""
    commands = sum(calls.values())
    # kombu's Redis transport sends its bookkeeping as MULTI ... EXEC pipelines (ZADD + HSET
    # when a task is fetched, ZREM + HDEL when it is acked): one round trip each.
    in_multi = sum(calls[c] for c in ("zadd", "hset", "zrem", "hdel", "exec"))
    return {
        "broker_round_trips_per_message": round((commands - in_multi) / n, 2),
        "broker_commands_per_message": round(commands / n, 2),
        "db_writes_per_message": round((db["tup_inserted"] + db["tup_updated"]) / n, 2),
        "db_commits_per_message": round(db["xact_commit"] / n, 2),
    }


def summarize_profile(path: Path, top: int = 30) -> str:
    """Self and inclusive shares of the non-idle samples of a py-spy ``--format raw`` file."""
    import re

    incl: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)", ")", f) for f in stack.split(";")]
        for f in set(frames):
            incl[f] += n
        own[frames[-1]] += n
    lines = [f"{path.name}: {total} samples (threads holding the GIL: Python CPU time)", "",
             "self:"]
    lines += [f"{v / total * 100:6.1f}%  {k}" for k, v in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"{v / total * 100:6.1f}%  {k}" for k, v in incl.most_common(top * 2)]
    return "\n".join(lines) + "\n"


# -- output ---------------------------------------------------------------------------------------


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted((s for s in result["steps"] if s["acked"]), key=lambda s: s["offered_per_s"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    xs = [s["offered_per_s"] for s in steps]
    for key, style in (("p50", "o-"), ("p99", "s-"), ("p999", "^-")):
        ax1.plot(xs, [s["latency_ms"][key] for s in steps], style, label=key)
    ax1.axhline(5, color="grey", ls=":", lw=1)
    ax1.axhline(25, color="grey", ls="--", lw=1)
    ax1.set_yscale("log")
    ax1.set_xlabel("offered load (messages/s)")
    ax1.set_ylabel("enqueue -> ack latency (ms)")
    ax1.set_title("latency vs offered load (dotted 5 ms, dashed 25 ms)")
    ax1.legend()
    names = ["raw Celery\nno-op drain", "pipeline\ndrain", "pipeline\nsustained", "push path"]
    vals = [result["raw_celery_per_s"], result["pipeline_drain_per_s"], result["acked_per_s"],
            result["push_per_s"]]
    bars = ax2.bar(names, vals, color=["#999", "#3a7", "#2a5", "#c73"])
    for b, v in zip(bars, vals, strict=True):
        ax2.text(b.get_x() + b.get_width() / 2, v, f"{v:.0f}", ha="center", va="bottom")
    ax2.set_ylabel("per second")
    ax2.set_title(f"throughput (ratio pipeline/raw = {result['ratio']:.2f})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(r: dict[str, Any]) -> str:
    l50, l90 = r["latency_ms_at_50pct"], r["latency_ms_at_90pct"]
    return "\n".join([
        f"raw Celery no-op drain     {r['raw_celery_per_s']:8.0f} tasks/s",
        f"pipeline drain             {r['pipeline_drain_per_s']:8.0f} acked/s   "
        f"ratio {r['ratio']:.2f}",
        f"sustained (<=1 s unacked)  {r['acked_per_s']:8.0f} acked/s   "
        f"ratio {r['ratio_sustained']:.2f}",
        f"latency at 50 % ({r['rate_at_50pct']:.0f}/s)  p50 {l50['p50']:.1f} ms  "
        f"p99 {l50['p99']:.1f} ms  p99.9 {l50['p999']:.1f} ms",
        f"latency at 90 % ({r['rate_at_90pct']:.0f}/s)  p50 {l90['p50']:.1f} ms  "
        f"p99 {l90['p99']:.1f} ms  p99.9 {l90['p999']:.1f} ms",
        f"  at 50 %: enqueue->accepted p50 {r['latency_split_at_50pct']['queue_ms']['p50']:.1f} "
        f"p99 {r['latency_split_at_50pct']['queue_ms']['p99']:.1f} ms; accepted->acked p50 "
        f"{r['latency_split_at_50pct']['route_ms']['p50']:.1f} "
        f"p99 {r['latency_split_at_50pct']['route_ms']['p99']:.1f} ms",
        f"push path                  {r['push_per_s']:8.0f} pushed/s",
        f"lost {r['lost']}   duplicate outcomes {r['duplicate_outcomes']}",
        *([f"socketio peer (no store, no ack) {r['peer_socketio_per_s']:5.0f} received/s   "
           f"ours/peer {r['ratio_vs_peer']:.2f}   latency at our 50 % rate "
           f"p50 {r['peer_socketio_latency_ms']['p50']:.1f} ms "
           f"p99 {r['peer_socketio_latency_ms']['p99']:.1f} ms"]
          if "peer_socketio_per_s" in r else []),
        f"broker round trips/message {r['broker_round_trips_per_message']:.2f} "
        f"({r['broker_commands_per_message']:.2f} commands)   "
        f"db writes/message {r['db_writes_per_message']:.2f} "
        f"(commits {r['db_commits_per_message']:.2f})",
        *(f"CPU ms/message {phase}: " + "  ".join(
            f"{k} {v:.2f}" for k, v in sorted(roles.items(), key=lambda kv: -kv[1]))
          for phase, roles in r["cpu_ms_per_message"].items()),
        *(f"batch limit {k:>3}: mean {b['mean_size']:5.1f}  {b['drain_per_s']:5.0f} acked/s  "
          f"CPU {b['cpu_ms_per_message']['total']:.2f} ms (workers "
          f"{b['cpu_ms_per_message'].get('workers', 0.0):.2f})  round trips "
          f"{b['broker_round_trips_per_message']:.2f}  writes {b['db_writes_per_message']:.2f}  "
          f"commits {b['db_commits_per_message']:.2f}  per message"
          for k, b in r.get("per_batch_size", {}).items()),
    ])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="delivery bench e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quick", action="store_true", help="a run under 60 s")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8, help="threads per worker")
    parser.add_argument("--drain", type=int, default=None, help="tasks pre-filled per drain")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--private-redis", action="store_true",
                        help="run a throw-away redis-server so commandstats count only this run")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                        help="record py-spy profiles of a worker and a gateway into DIR")
    parser.add_argument("--no-peer", action="store_true",
                        help="skip the python-socketio peer (bench/peer_socketio)")
    parser.add_argument("--role-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a DELIVERY_* setting for the workers and gateways (repeatable), "
                        "e.g. DELIVERY_SEND_BATCH_INFLIGHT=2")
    parser.add_argument("--worker-arg", action="append", default=[], metavar="ARG",
                        help="an extra `celery worker` argument (repeatable), e.g. "
                        "--worker-arg=--prefetch-multiplier=2")
    parser.add_argument("--max-backlog", type=int, default=0, metavar="N",
                        help="producer flow control in the paced steps: refuse sends while N "
                        "tasks are queued (DELIVERY_MAX_BACKLOG; default off)")
    parser.add_argument("--overload", type=float, default=0.0, metavar="F",
                        help="one more paced step at F x the drain rate (e.g. 1.5), after the "
                        "latency steps: the latency of what is accepted, and what is refused")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke test
    parser.add_argument("--group", action="store_true",
                        help="only the group case: G-member group messages against the same "
                        "recipient deliveries as direct messages (bench/e2e_group.py)")
    parser.add_argument("--group-size", type=int, default=50, help="members per group")
    parser.add_argument("--group-messages", type=int, default=40,
                        help="group messages in the group case")
    args = parser.parse_args(argv)
    if args.py_spy is not None and py_spy_exe() is None:
        parser.error(f"--py-spy: {PY_SPY_MISSING}")
    kw: dict[str, Any] = {"workers": args.workers, "gateways": args.gateways,
                          "clients": args.clients, "concurrency": args.concurrency}
    if args.drain:
        kw["drain_n"] = args.drain
    params = Params(**kw)
    if args.tiny:
        params = tiny_params(**kw)
    elif args.quick:
        params = Params.quick(**kw)
    role_env = {}
    for item in args.role_env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("DELIVERY_"):
            parser.error(f"--role-env {item!r}: expected DELIVERY_NAME=VALUE")
        role_env[name] = value
    bench = Bench(params, private_redis=args.private_redis, py_spy=args.py_spy,
                  peer=not args.no_peer, role_env=role_env, max_backlog=args.max_backlog,
                  overload=args.overload, worker_args=tuple(args.worker_arg))

    def on_term(signum: int, frame: FrameType | None) -> None:
        first = not STOP.is_set()
        STOP.set()
        if first:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_term) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = (bench.run_group(args.group_size, args.group_messages) if args.group
                  else bench.run())
    except KeyboardInterrupt:
        progress("interrupted: cleaning up")
        return 130
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # let the clean-up finish
        bench.teardown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.group:
        from bench.e2e_group import summary as group_summary

        (args.out / "e2e-group.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result) if args.json else group_summary(result))
        return 0
    (args.out / "e2e.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "e2e.png")
    progress(f"wrote {args.out / 'e2e.json'} and {args.out / 'e2e.png'}")
    if args.json:
        print(json.dumps(result))
    else:
        print(summary(result))
    ok = result["lost"] == 0 and result["duplicate_outcomes"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
