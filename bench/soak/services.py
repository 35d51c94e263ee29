"""The soak's own services, so its faults touch nothing else on the machine: a private
redis-server, a private PostgreSQL (or a fresh database on a shared one), a RabbitMQ vhost."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import redis

from workers.devkit.procs import Proc, free_port

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)




class PrivateRedis:
    """redis-server on a free port with no persistence: a restart empties it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Proc | None = None

    def start(self) -> None:
        self.proc = Proc("soak-redis", [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no",
        ], {"PATH": os.environ.get("PATH", "")})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                if redis.Redis.from_url(self.url).ping():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"private redis did not start:\n{self.proc.log()}")

    def restart(self) -> None:
        if self.proc is not None:
            self.proc.kill9()
            self.proc.stop()
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def _pg_bin(name: str) -> str:
    for d in PG_BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(name)
    return found


class PrivatePostgres:
    """initdb into a temporary directory as the ``postgres`` OS user (postgres refuses to run
    as root) on a free port, so the soak may restart it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="soak-pg-"))
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


def create_database(admin_url: str) -> str:
    name = f"delivery_soak_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{admin_url.rpartition('/')[0]}/{name}"


def drop_database(admin_url: str, url: str) -> None:
    name = url.rpartition("/")[2]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def set_database_open(admin_url: str, url: str, allowed: bool) -> None:
    """Refuse (and terminate) or allow again the connections to one database."""
    name = url.rpartition("/")[2]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


class RabbitVhost:
    """A vhost of its own on the local RabbitMQ node, removed afterwards."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5672) -> None:
        self.name = f"soak-{uuid.uuid4().hex[:8]}"
        self.url = f"amqp://guest:guest@{host}:{port}/{self.name}"

    @staticmethod
    def _ctl(*args: str) -> str:
        out = subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=60,
                             capture_output=True, text=True)
        return out.stdout

    def start(self) -> None:
        self._ctl("add_vhost", self.name)
        self._ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")

    def restart(self) -> None:
        """What a broker restart looks like to its clients: every connection closed at once
        (``restart_vhost`` only restarts a vhost that failed, so it is not enough)."""
        self._ctl("close_all_connections", "--vhost", self.name, "soak: broker restart")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._ctl("delete_vhost", self.name)


def rabbitmq_answers(host: str = "127.0.0.1", port: int = 5672) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False
