"""Shared fixtures: this run's PostgreSQL database, Redis key space and RabbitMQ vhosts,
cleaned up after."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from delivery import migrate
from delivery.db import make_engine
from delivery.store import Store
from workers.devkit.services import (
    REDIS_URL,
    ServiceEnv,
    clear_redis_prefix,
    fresh_pg_database,
    fresh_rabbitmq_vhost,
    rabbitmq_available,
)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test run (dropped at the end)."""
    with fresh_pg_database() as url:
        migrate.upgrade(url)
        yield url


@pytest.fixture(scope="session")
def run_prefix() -> Iterator[str]:
    """This run's Redis key prefix; every key under it is deleted at the end."""
    prefix = f"dtest-{uuid.uuid4().hex[:8]}"
    yield prefix
    clear_redis_prefix(REDIS_URL, prefix)


@pytest.fixture(scope="session")
def rabbitmq() -> None:
    """RabbitMQ can give this run vhosts; skips otherwise (fails on CI, which must have it)."""
    why = rabbitmq_available()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"RabbitMQ is required on CI: {why}")
        pytest.skip(f"RabbitMQ unavailable: {why}")


@pytest.fixture
def amqp_url(rabbitmq: None) -> Iterator[str]:
    """A broker URL on a RabbitMQ vhost of this test's own, deleted afterwards."""
    with fresh_rabbitmq_vhost() as url:
        yield url


@pytest.fixture
def key_prefix(run_prefix: str) -> str:
    """A key space per test, inside the run's prefix."""
    return f"{run_prefix}:{uuid.uuid4().hex[:6]}"


@pytest.fixture
def services(pg_url: str, key_prefix: str) -> ServiceEnv:
    return ServiceEnv(database_url=pg_url, redis_url=REDIS_URL, key_prefix=key_prefix)


@pytest.fixture(scope="session")
def pg_engine(pg_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_store(pg_engine) -> Store:  # type: ignore[no-untyped-def]
    with pg_engine.begin() as conn:
        conn.execute(text("TRUNCATE messages, delivery_attempts, devices, conversations,"
                          " conversation_members, conversation_messages RESTART IDENTITY CASCADE"))
    return Store(pg_engine)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'delivery.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    engine = make_engine(sqlite_url)
    yield Store(engine)
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> Store:
    """The store on both backends: behaviour must not depend on the database."""
    name = "sqlite_store" if request.param == "sqlite" else "pg_store"
    result: Store = request.getfixturevalue(name)
    return result


@pytest.fixture
def own_pg() -> Iterator[tuple[str, Store]]:
    """A database of this test's own, so an outage of it disturbs nothing else."""
    with fresh_pg_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        yield url, Store(engine)
        engine.dispose()
