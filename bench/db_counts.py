"""Database calls made through one SQLAlchemy engine, counted from its events: statements sent
and commits (the per-message figures of ``bench.send_cost`` and ``bench.micro.store_batch``)."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import event
from sqlalchemy.engine import Engine


def count_db_calls(engine: Engine) -> Counter[str]:
    """A counter of ``statements`` and ``commits`` on ``engine`` from now on (it grows)."""
    counts: Counter[str] = Counter(statements=0, commits=0)

    def statement(*_: object) -> None:
        counts["statements"] += 1

    def commit(*_: object) -> None:
        counts["commits"] += 1

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    return counts
