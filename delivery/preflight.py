"""Start-up checks: a bad setting or a service that cannot be reached becomes one line naming
the variable (commands exit 2) instead of a traceback, and nothing is created on the way
(``delivery inspect`` before ``delivery migrate`` must not leave an empty SQLite file behind).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from delivery.settings import Settings, SettingsError

DB_VAR = "DELIVERY_DATABASE_URL"
BROKER_VAR = "DELIVERY_BROKER_URL"
REDIS_VAR = "DELIVERY_REDIS_URL"


class ServiceError(SettingsError):
    """A configured service cannot be used; the message names the variable."""


def safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and for ``:memory:``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    from delivery.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_database(settings: Settings, *, migrated: bool = True) -> None:
    """Raise ServiceError unless the database answers (and, with ``migrated``, is at head)."""
    from delivery.db import make_engine

    url = settings.effective_database_url
    path = sqlite_path(url)
    if path is not None and not path.exists():
        if migrated:
            raise ServiceError(f"{DB_VAR}: no database at {path} yet: run `delivery migrate`")
        return
    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        try:
            current = current_revision(engine)
        except Exception as exc:
            raise ServiceError(f"{DB_VAR}: cannot connect to {safe_url(url)}: "
                               f"{first_line(exc)}") from None
    finally:
        engine.dispose()
    if not migrated:
        return
    head = head_revision()
    if current != head:
        raise ServiceError(f"{DB_VAR}: the database at {safe_url(url)} is at revision "
                           f"{current or 'none (empty)'}, this release needs {head}: "
                           "run `delivery migrate`")


def check_redis(settings: Settings, timeout: float = 3.0) -> None:
    """Raise ServiceError unless DELIVERY_REDIS_URL answers PING (no-op when unset)."""
    if not settings.redis_url:
        return
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=timeout,
                                  socket_timeout=timeout)
    try:
        client.ping()
        recorded = record_shard_count(client, settings)
    except Exception as exc:
        raise ServiceError(f"{REDIS_VAR}: cannot reach {safe_url(settings.redis_url)}: "
                           f"{first_line(exc)}") from None
    finally:
        client.close()
    if recorded is not None and recorded != settings.presence_shards:
        raise SettingsError(
            f"DELIVERY_PRESENCE_SHARDS={settings.presence_shards}, but this deployment runs "
            f"{recorded} shards (Redis key {shard_count_key(settings)}); every process must "
            "use the same S — to change it, see docs/operations.md (\"Changing S\")")


def shard_count_key(settings: Settings) -> str:
    return f"{settings.key_prefix}:presence:shards"


def record_shard_count(client: Any, settings: Settings) -> int | None:
    """The deployment's S as recorded in Redis (the first sharded process records its own).
    Unsharded processes only read it: S = 1 writes nothing, as before sharding."""
    key = shard_count_key(settings)
    if settings.presence_shards > 1:
        client.set(key, settings.presence_shards, nx=True)
    raw = client.get(key)
    return None if raw is None else int(raw)


def check_broker(settings: Settings, timeout: float = 3.0) -> None:
    """Raise ServiceError unless the broker accepts a connection (no-op when embedded)."""
    if settings.embedded:
        return
    from kombu.connection import Connection

    url = settings.effective_broker_url
    try:
        with Connection(url, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:
        raise ServiceError(f"{BROKER_VAR}: cannot reach {safe_url(url)}: "
                           f"{first_line(exc)}") from None


def describe(exc: BaseException) -> str | None:
    """One line naming the variable for a connection error that escaped a command, else None."""
    import redis
    from kombu.exceptions import OperationalError as BrokerError
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        return f"{DB_VAR}: database error: {first_line(exc.orig or exc)}"
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return f"{REDIS_VAR}: cannot reach Redis: {first_line(exc)}"
    if isinstance(exc, BrokerError):
        return f"{BROKER_VAR}: cannot reach the broker: {first_line(exc)}"
    return None
