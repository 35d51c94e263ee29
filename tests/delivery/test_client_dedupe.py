"""The client's dedupe stores on their own: bounded to the most recent ids, oldest evicted
first, and (the SQLite file) the same ids after the store is reopened, as after a restart."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery.client_dedupe import MemorySeenStore, SeenStore, SqliteSeenStore


class Model:
    """What either store must remember: ids in first-recorded order, the newest ``n``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.ids: list[str] = []

    def add(self, msg_id: str) -> None:
        if msg_id not in self.ids:
            self.ids.append(msg_id)
            del self.ids[:-self.n]


def test_memory_store_evicts_the_oldest() -> None:
    s = MemorySeenStore(max_ids=3)
    for i in range(5):
        s.add(f"m{i}")
    s.add("m3")  # already there: not moved, not counted twice
    assert [s.seen(f"m{i}") for i in range(5)] == [False, False, True, True, True]
    assert len(s) == 3


def test_sqlite_store_survives_reopening_and_evicts_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "seen.sqlite3"
    s = SqliteSeenStore(path, max_ids=3)
    for i in range(4):
        s.add(f"m{i}")
    s.close()
    s = SqliteSeenStore(path, max_ids=3)  # a new process on the same file
    assert [s.seen(f"m{i}") for i in range(4)] == [False, True, True, True]
    s.add("m4")
    assert not s.seen("m1") and s.seen("m4") and len(s) == 3
    s.close()
    s = SqliteSeenStore(path, max_ids=2)  # reopened with a smaller bound: the oldest go
    assert [s.seen(f"m{i}") for i in range(5)] == [False, False, False, True, True]
    s.close()


def test_both_stores_satisfy_the_protocol(tmp_path: Path) -> None:
    sqlite = SqliteSeenStore(tmp_path / "s.db")
    assert isinstance(MemorySeenStore(), SeenStore) and isinstance(sqlite, SeenStore)
    sqlite.close()
    with pytest.raises(ValueError):
        MemorySeenStore(max_ids=0)


# Each step adds an id from a small alphabet (so repeats and re-adds after eviction happen),
# or (None) reopens the SQLite file.
steps = st.lists(st.one_of(st.none(), st.integers(0, 12).map(lambda i: f"id-{i}")),
                 max_size=60)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 6), ops=steps)
def test_stores_remember_exactly_the_most_recent_ids(n: int, ops: list[str | None]) -> None:
    model = Model(n)
    memory = MemorySeenStore(max_ids=n)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seen.sqlite3"
        sqlite = SqliteSeenStore(path, max_ids=n)
        try:
            for op in ops:
                if op is None:
                    sqlite.close()
                    sqlite = SqliteSeenStore(path, max_ids=n)
                    continue
                model.add(op)
                memory.add(op)
                sqlite.add(op)
                for i in range(13):
                    want = f"id-{i}" in model.ids
                    assert memory.seen(f"id-{i}") == want
                    assert sqlite.seen(f"id-{i}") == want
            assert len(memory) == len(sqlite) == len(model.ids)
        finally:
            sqlite.close()
