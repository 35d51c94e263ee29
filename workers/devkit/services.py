"""Scratch services for tests and benchmarks on the real Redis, PostgreSQL and RabbitMQ: a
database, a Redis key space and a RabbitMQ vhost per run, each removed afterwards; a private
redis-server or PostgreSQL server; and the faults a run may inject into its own services (a
database outage, a server or broker restart). Each touches only the run's own database,
server or vhost."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
import redis
from sqlalchemy.engine import make_url

from workers.devkit.procs import Proc, free_port, wait_until

PG_ADMIN_URL = os.environ.get(
    "DELIVERY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("DELIVERY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# A fresh random token secret per run: no secret of ours is ever a published value.
RUN_SECRET = secrets.token_urlsafe(32)
# Without a vhost: each run adds its own (needs rabbitmqctl on this machine, as CI has).
AMQP_URL = os.environ.get("DELIVERY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")


@dataclass(frozen=True)
class ServiceEnv:
    """Environment for a process of ours talking to this run's database and key space."""

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


# -- PostgreSQL ---------------------------------------------------------------------------------


def pg_answers(url: str) -> bool:
    """The PostgreSQL server of ``url`` answers a query."""
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def with_database(url: str, name: str) -> str:
    """``url`` with its database replaced by ``name``."""
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


def create_database(prefix: str = "delivery_test", admin_url: str = PG_ADMIN_URL) -> str:
    """Create a uniquely named database on ``admin_url``'s server; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def drop_database(url: str, admin_url: str = PG_ADMIN_URL) -> None:
    """Drop the database of ``url``, ending its connections (also in the middle of an outage:
    dropping does not connect to it)."""
    name = _database_name(url, admin_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_pg_database(prefix: str = "delivery_test",
                      admin_url: str = PG_ADMIN_URL) -> Iterator[str]:
    """Create a uniquely named database, yield its URL, drop it afterwards."""
    url = create_database(prefix, admin_url)
    try:
        yield url
    finally:
        drop_database(url, admin_url)


def _database_name(url: str, admin_url: str = PG_ADMIN_URL) -> str:
    """The database of ``url``, unless it is a shared one: the server's own, or the admin
    database every test run starts from (CI's is a fresh ``ci_*`` database, not ``postgres``)."""
    name = make_url(url).database
    if not name or name in ("postgres", "template0", "template1", make_url(admin_url).database):
        raise ValueError(f"refusing to take down the shared database {name!r}")
    return name


def refuse_connections(url: str, admin_url: str = PG_ADMIN_URL) -> None:
    """Start an outage of ``url``'s database: refuse new connections, end the live ones (what
    a PostgreSQL restart or failover looks like to its clients)."""
    name = _database_name(url, admin_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


def allow_connections(url: str, admin_url: str = PG_ADMIN_URL) -> None:
    name = _database_name(url, admin_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')


@contextmanager
def database_outage(url: str, admin_url: str = PG_ADMIN_URL) -> Iterator[None]:
    """The database of ``url`` is unreachable inside the block (always restored after)."""
    refuse_connections(url, admin_url)
    try:
        yield
    finally:
        allow_connections(url, admin_url)


_PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _pg_bin(name: str) -> str:
    for d in _PG_BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(name)
    return found


class PrivatePostgres:
    """initdb into a temporary directory as the ``postgres`` OS user (postgres refuses to run
    as root) on a free port, so a run may restart it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="private-pg-"))
        self.data = self.dir / "data"
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, args: list[str], timeout: float = 120) -> None:
        prefix: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            prefix = ["runuser", "-u", "postgres", "--"]
        subprocess.run(prefix + args, check=True, timeout=timeout, capture_output=True)

    def _ctl(self, action: str) -> None:
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c max_connections=200")
        self._as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                           str(self.dir / "log"), "-m", "fast", "-w", action])

    def start(self) -> None:
        self._as_postgres([_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U",
                           "postgres", "--no-sync"])
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("restart")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._ctl("stop")
        shutil.rmtree(self.dir, ignore_errors=True)


# -- Redis --------------------------------------------------------------------------------------


def redis_answers(url: str) -> bool:
    """The Redis server of ``url`` answers PING."""
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def clear_redis_prefix(url: str, prefix: str) -> int:
    client = redis.Redis.from_url(url)
    n = 0
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)
        n += 1
    client.close()
    return n


class PrivateRedis:
    """A redis-server of the run's own on a free port. With an append-only file, ``restart``
    keeps its data (an operator's restart, not a disk loss); ``crash`` kills it (-9) and starts
    it again. Without ``tmp`` it works in a temporary directory removed by ``stop``."""

    def __init__(self, tmp: str | None = None, *, appendonly: bool = True) -> None:
        self.port = free_port()
        self._own_tmp = tmp is None
        self.tmp = tmp if tmp is not None else tempfile.mkdtemp(prefix="private-redis-")
        self.appendonly = appendonly
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Proc | None = None

    def start(self, timeout: float = 15.0) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", self.tmp]
        args += (["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly
                 else ["--appendonly", "no"])
        self.proc = Proc("redis", args, {"PATH": os.environ.get("PATH", "")})
        if not wait_until(lambda: redis_answers(self.url), timeout):
            raise RuntimeError(f"private redis did not start:\n{self.proc.log()}")

    def restart(self, down_s: float = 0.0) -> None:
        redis.Redis.from_url(self.url).shutdown(nosave=False)
        assert self.proc is not None
        self.proc.popen.wait(10)
        self.proc.stop()
        time.sleep(down_s)
        self.start()

    def crash(self) -> None:
        if self.proc is not None:
            self.proc.kill9()
            self.proc.stop()
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        if self._own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


# -- RabbitMQ -----------------------------------------------------------------------------------


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


def rabbitmq_answers(url: str = AMQP_URL) -> bool:
    """The broker of ``url`` accepts TCP connections (quicker than asking rabbitmqctl)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672),
                                      timeout=1.0):
            return True
    except OSError:
        return False


class RabbitVhost:
    """A vhost of its own on the RabbitMQ node of ``base_url`` (an AMQP URL without a vhost),
    that its user may use; ``stop`` deletes it with every queue and exchange in it."""

    def __init__(self, base_url: str = AMQP_URL, prefix: str = "delivery_test") -> None:
        self.user = urlsplit(base_url).username or "guest"
        self.name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.url = f"{base_url.rstrip('/')}/{self.name}"

    def start(self) -> None:
        _rabbitmqctl("add_vhost", self.name)
        try:
            _rabbitmqctl("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")
        except BaseException:
            self.stop()
            raise

    def restart(self) -> None:
        """What a broker restart looks like to its clients: every connection closed at once
        (``restart_vhost`` only restarts a vhost that failed, so it is not enough)."""
        _rabbitmqctl("close_all_connections", "--vhost", self.name, "broker restart")

    def stop(self) -> None:
        _rabbitmqctl("delete_vhost", self.name)


@contextmanager
def fresh_rabbitmq_vhost(prefix: str = "delivery_test") -> Iterator[str]:
    """Create a vhost the AMQP_URL user may use, yield its broker URL, delete it afterwards."""
    vhost = RabbitVhost(AMQP_URL, prefix)
    vhost.start()
    try:
        yield vhost.url
    finally:
        vhost.stop()
