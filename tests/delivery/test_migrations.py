from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from delivery import migrate
from delivery.db import make_engine
from delivery.models import Base
from workers.devkit.services import fresh_pg_database


def _sqlite_type_differs(context: Any, inspected: Any, metadata: Any, inspected_type: Any,
                         metadata_type: Any) -> bool | None:
    """SQLite enforces no VARCHAR length (migration 0003 widens conversation ids on PostgreSQL
    only): a length is not a difference there. Anything else: alembic's own comparison."""
    if isinstance(inspected_type, sa.String) and isinstance(metadata_type, sa.String):
        return False
    return None


def _roundtrip_and_compare(url: str) -> None:
    migrate.upgrade(url)
    migrate.downgrade(url)
    migrate.upgrade(url)
    engine = make_engine(url)
    opts = {"compare_type": _sqlite_type_differs} if url.startswith("sqlite") else {}
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts=opts), Base.metadata)
    engine.dispose()
    assert diff == []


def test_migrations_roundtrip_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _roundtrip_and_compare(f"sqlite:///{tmp_path / 'm.db'}")


def test_migrations_roundtrip_postgresql() -> None:
    with fresh_pg_database("delivery_migr") as url:
        _roundtrip_and_compare(url)


def test_the_wire_accepts_every_conversation_id_the_store_holds() -> None:
    from delivery.gateway.protocol import MAX_CONVERSATION_LEN
    from delivery.models import CONV_ID_LEN

    assert MAX_CONVERSATION_LEN == CONV_ID_LEN
