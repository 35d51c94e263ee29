"""Real Redis and PostgreSQL for tests: a database and a Redis key space per test run."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import redis

PG_ADMIN_URL = os.environ.get(
    "DELIVERY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("DELIVERY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# A fresh random token secret per test run: no secret of ours is ever a published value.
RUN_SECRET = secrets.token_urlsafe(32)


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

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
        env.update({
            "DELIVERY_DATABASE_URL": self.database_url,
            "DELIVERY_BROKER_URL": self.redis_url,
            "DELIVERY_REDIS_URL": self.redis_url,
            "DELIVERY_KEY_PREFIX": self.key_prefix,
            "DELIVERY_SECRET": self.secret,
            "PYTHONUNBUFFERED": "1",
        })
        env.update(extra)
        return env
