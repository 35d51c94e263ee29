from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from delivery import migrate
from delivery.db import make_engine
from delivery.models import Base
from workers.devkit.services import fresh_pg_database


def _roundtrip_and_compare(url: str) -> None:
    migrate.upgrade(url)
    migrate.downgrade(url)
    migrate.upgrade(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_migrations_roundtrip_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _roundtrip_and_compare(f"sqlite:///{tmp_path / 'm.db'}")


def test_migrations_roundtrip_postgresql() -> None:
    with fresh_pg_database("delivery_migr") as url:
        _roundtrip_and_compare(url)
