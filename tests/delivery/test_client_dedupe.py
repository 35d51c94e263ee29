"""The clients' dedupe stores on their own: bounded to the most recent ids, oldest evicted
first, and the same ids after the store is reopened, as after a restart (the Python client's
SQLite file) or a page reload (the browser client's localStorage, run under Node.js)."""

from __future__ import annotations

import json
import shutil
import subprocess
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
    s.add("m5")  # used after close (a late ack): reopens the file
    assert s.seen("m5") and not s.seen("m3")
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


NODE = shutil.which("node")
CLIENT_JS = Path(__file__).resolve().parents[2] / "delivery" / "static" / "client.js"

SEEN_IDS_SCRIPT = """
import { SeenIds } from "./client.mjs";
const items = new Map();
const storage = {
  getItem: (k) => (items.has(k) ? items.get(k) : null),
  setItem: (k, v) => void items.set(k, String(v)),
  removeItem: (k) => void items.delete(k),
};
const before = new SeenIds("bob", { maxIds: 20, storage });
for (let i = 0; i < 100; i += 1) before.add(`m${i}`);
before.add("m99");
const reloaded = new SeenIds("bob", { maxIds: 20, storage });
const range = [...Array(100).keys()];
const fail = () => { throw new Error("storage unavailable"); };
const throwing = { getItem: fail, setItem: fail, removeItem: fail };
const broken = new SeenIds("bob", { maxIds: 20, storage: throwing });
for (let i = 0; i < 100; i += 1) broken.add(`m${i}`);
console.log(JSON.stringify({
  kept: range.filter((i) => reloaded.has(`m${i}`)),
  keys: items.size,
  carol: range.filter((i) => new SeenIds("carol", { maxIds: 20, storage }).has(`m${i}`)).length,
  broken: range.filter((i) => broken.has(`m${i}`)),
}));
"""


@pytest.mark.skipif(NODE is None, reason="Node.js not found")
def test_browser_seen_ids_are_bounded_and_survive_a_reload(tmp_path: Path) -> None:
    """The browser client's SeenIds in chunks of maxIds / 10: a new instance on the same storage
    (a page reload) knows the most recent ids, between maxIds and one chunk more; old chunks
    are removed from storage; another user's ids are separate; a storage that throws falls
    back to memory, bounded the same way."""
    shutil.copy(CLIENT_JS, tmp_path / "client.mjs")
    (tmp_path / "check.mjs").write_text(SEEN_IDS_SCRIPT)
    assert NODE is not None
    out = subprocess.run([NODE, "check.mjs"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, check=True)
    got = json.loads(out.stdout)
    for kept in (got["kept"], got["broken"]):
        assert 20 <= len(kept) <= 22 and kept == list(range(100 - len(kept), 100))
    assert got["keys"] <= 12  # 11 chunks of 2 ids and the newest chunk's number
    assert got["carol"] == 0
