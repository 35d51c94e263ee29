"""The dev kit's scratch services do what the tests, benchmarks and soak rely on."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import redis

from workers.devkit.procs import wait_until
from workers.devkit.services import (
    PG_ADMIN_URL,
    PrivateRedis,
    create_database,
    database_outage,
    drop_database,
    fresh_pg_database,
    pg_answers,
    refuse_connections,
    with_database,
)


def _exists(url: str) -> bool:
    name = url.rpartition("/")[2]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                           (name,)).fetchone()
    return bool(row and row[0])


def test_wait_until_says_whether_the_condition_held() -> None:
    calls = iter([False, False, True])
    assert wait_until(lambda: next(calls), 5.0, interval=0.001)
    assert not wait_until(lambda: False, 0.05, interval=0.01)


def test_with_database_replaces_only_the_database() -> None:
    assert with_database("postgresql://u@h:5432/postgres", "x") == "postgresql://u@h:5432/x"


def test_a_fresh_database_is_dropped_afterwards() -> None:
    with fresh_pg_database("devkit_test") as url:
        assert _exists(url) and pg_answers(url)
    assert not _exists(url)


def test_an_outage_refuses_connections_until_it_ends() -> None:
    url = create_database("devkit_test")
    try:
        with database_outage(url):
            assert not pg_answers(url)
        assert pg_answers(url)
        refuse_connections(url)
        drop_database(url)  # also in the middle of an outage
        assert not _exists(url)
    finally:
        drop_database(url)


def test_the_shared_databases_are_never_taken_down() -> None:
    with pytest.raises(ValueError), database_outage(PG_ADMIN_URL):
        pass


def test_private_redis_restart_keeps_its_data_and_a_crash_without_aof_loses_it(
        tmp_path: Path) -> None:
    kept = PrivateRedis(str(tmp_path))
    kept.start()
    try:
        redis.Redis.from_url(kept.url).set("k", "v")
        kept.restart()
        assert redis.Redis.from_url(kept.url).get("k") == b"v"
    finally:
        kept.stop()
    lost = PrivateRedis(appendonly=False)
    lost.start()
    try:
        redis.Redis.from_url(lost.url).set("k", "v")
        lost.crash()
        assert redis.Redis.from_url(lost.url).get("k") is None
    finally:
        lost.stop()
    assert not Path(lost.tmp).exists()  # its own directory goes with it
