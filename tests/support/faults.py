"""Faults a test can inject into the real services it uses: a database outage (connections
refused, live backends terminated — what a PostgreSQL restart or failover looks like to its
clients) and a private Redis that can be restarted. Each touches only this test's own
database or server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import redis
from sqlalchemy.engine import make_url

from tests.support.services import PG_ADMIN_URL
from workers.procs import Proc, free_port


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
