"""What every part of the store shares: one engine, a connection per call (thread-safe)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Table
from sqlalchemy.dialects import postgresql, sqlite


class StoreBase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name

    def _upsert(self, table: Table) -> Any:
        """This dialect's ``INSERT`` with ``ON CONFLICT`` clauses (PostgreSQL or SQLite)."""
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        if self._dialect == "sqlite":
            return sqlite.insert(table)
        raise RuntimeError(f"unsupported database dialect {self._dialect!r}")
