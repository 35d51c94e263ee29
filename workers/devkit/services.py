"""Scratch services for tests and benchmarks on the real Redis, PostgreSQL and RabbitMQ: a
database, a Redis key space and a RabbitMQ vhost per run, each removed afterwards; a private
redis-server; and the faults a run may inject into its own services (a database outage, a Redis
restart). Each touches only the run's own database or server."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
import redis
from sqlalchemy.engine import make_url

from workers.devkit.procs import Proc, free_port

PG_ADMIN_URL = os.environ.get(
    "DELIVERY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("DELIVERY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# A fresh random token secret per test run: no secret of ours is ever a published value.
RUN_SECRET = secrets.token_urlsafe(32)
# Without a vhost: each run adds its own (needs rabbitmqctl on this machine, as CI has).
AMQP_URL = os.environ.get("DELIVERY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")


def _with_db(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@contextmanager
def fresh_pg_database(prefix: str = "delivery_test") -> Iterator[str]:
    """Create a uniquely named database, yield its URL, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_db(PG_ADMIN_URL, name)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rabbitmqctl(*args: str) -> str:
    res = subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True,
                         text=True, timeout=60)
    return res.stdout


def rabbitmq_queues(url: str) -> list[dict[str, Any]]:
    """The queues of the vhost in broker ``url``: name, durable, type, messages,
    messages_persistent, messages_unacknowledged."""
    vhost = unquote(urlsplit(url).path.lstrip("/")) or "/"
    out = _rabbitmqctl("list_queues", "-p", vhost, "name", "durable", "type", "messages",
                       "messages_persistent", "messages_unacknowledged", "--formatter", "json")
    queues: list[dict[str, Any]] = json.loads(out or "[]")
    return queues


def rabbitmq_available() -> str | None:
    """None when RabbitMQ vhosts can be made here, else why not."""
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not installed"
    try:
        _rabbitmqctl("status")
    except (subprocess.SubprocessError, OSError) as exc:
        return f"rabbitmqctl status failed: {exc}"
    return None


@contextmanager
def fresh_rabbitmq_vhost(prefix: str = "delivery_test") -> Iterator[str]:
    """Create a vhost the AMQP_URL user may use, yield its broker URL, delete it afterwards
    (with every queue and exchange in it)."""
    user = urlsplit(AMQP_URL).username or "guest"
    vhost = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield f"{AMQP_URL.rstrip('/')}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def clear_redis_prefix(url: str, prefix: str) -> int:
    client = redis.Redis.from_url(url)
    n = 0
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)
        n += 1
    client.close()
    return n


@dataclass(frozen=True)
class ServiceEnv:
    """Environment for a process of ours talking to this test run's database and key space."""

    database_url: str
    redis_url: str
    key_prefix: str
    secret: str = RUN_SECRET
    broker_url: str = ""  # empty: the Celery broker is redis_url

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
        env.update({
            "DELIVERY_DATABASE_URL": self.database_url,
            "DELIVERY_BROKER_URL": self.broker_url or self.redis_url,
            "DELIVERY_REDIS_URL": self.redis_url,
            "DELIVERY_KEY_PREFIX": self.key_prefix,
            "DELIVERY_SECRET": self.secret,
            "PYTHONUNBUFFERED": "1",
        })
        env.update(extra)
        return env



def _database_name(url: str) -> str:
    name = make_url(url).database
    if not name or name in ("postgres", "template0", "template1"):
        raise ValueError(f"refusing to take down the shared database {name!r}")
    return name


def refuse_connections(url: str) -> None:
    """Start an outage of ``url``'s database: refuse new connections, end the live ones."""
    name = _database_name(url)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


def allow_connections(url: str) -> None:
    name = _database_name(url)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')


@contextmanager
def database_outage(url: str) -> Iterator[None]:
    """The database of ``url`` is unreachable inside the block (always restored after)."""
    refuse_connections(url)
    try:
        yield
    finally:
        allow_connections(url)


class PrivateRedis:
    """A redis-server of the test's own on a free port; ``restart`` keeps its data when it
    runs with an append-only file (an operator's restart, not a disk loss)."""

    def __init__(self, tmp: str, *, appendonly: bool = True) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.appendonly = appendonly
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Proc | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", self.tmp]
        args += (["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly
                 else ["--appendonly", "no"])
        self.proc = Proc("redis", args, {})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"private redis did not start:\n{self.proc.log()}")

    def restart(self, down_s: float = 0.0) -> None:
        redis.Redis.from_url(self.url).shutdown(nosave=False)
        assert self.proc is not None
        self.proc.popen.wait(10)
        self.proc.stop()
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
