"""URL schemes each variable accepts, and the pool settings reaching the engine."""

from __future__ import annotations

import pytest

from delivery.runtime import Runtime
from delivery.settings import Settings, SettingsError
from workers.devkit.services import RUN_SECRET as SECRET


@pytest.mark.parametrize(("var", "url"), [
    ("DELIVERY_DATABASE_URL", "postgresql+psycopg://u@h/db"),
    ("DELIVERY_DATABASE_URL", "sqlite:////tmp/x.db"),
    ("DELIVERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/v"),
    ("DELIVERY_BROKER_URL", "rediss://h:6380/0"),
    ("DELIVERY_REDIS_URL", "redis://h:6379/1"),
])
def test_accepted_schemes(var: str, url: str) -> None:
    Settings.from_env({"DELIVERY_REDIS_URL": "redis://h:6379/0", "DELIVERY_SECRET": SECRET,
                       var: url})


@pytest.mark.parametrize(("var", "url"), [
    ("DELIVERY_DATABASE_URL", "mysql://root@h/chat"),
    ("DELIVERY_DATABASE_URL", "postgress://u@h/db"),
    ("DELIVERY_BROKER_URL", "sqs://h"),
    ("DELIVERY_REDIS_URL", "amqp://h/"),
])
def test_rejected_schemes_name_the_variable(var: str, url: str) -> None:
    with pytest.raises(SettingsError, match=var):
        Settings.from_env({"DELIVERY_REDIS_URL": "redis://h:6379/0", "DELIVERY_SECRET": SECRET,
                       var: url})


def test_pool_settings_reach_the_engine(pg_url: str) -> None:
    settings = Settings.from_env({"DELIVERY_DATABASE_URL": pg_url, "DELIVERY_DB_POOL_SIZE": "3",
                                  "DELIVERY_DB_MAX_OVERFLOW": "4", "DELIVERY_SECRET": SECRET})
    engine = Runtime.from_settings(settings).store.engine
    try:
        assert engine.pool.size() == 3  # type: ignore[attr-defined]
        assert engine.pool._max_overflow == 4  # type: ignore[attr-defined]
    finally:
        engine.dispose()
    with pytest.raises(SettingsError, match="DELIVERY_DB_MAX_OVERFLOW"):
        Settings.from_env({"DELIVERY_DB_MAX_OVERFLOW": "-1"})
