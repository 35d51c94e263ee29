"""Hypothesis fuzz: generated frames (valid, half-valid and garbage) from hostile connections,
while a well-behaved connection beside them keeps receiving and acking. The gateway must stay
up, never let a hostile ack touch another user's message, and keep serving the good client."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from delivery.gateway import GatewayConfig, issue_token
from delivery.models import State
from delivery.store import Store
from tests.delivery.gateway.conftest import SECRET, Harness, gateway_harness

T = TypeVar("T")
MIN_FRAMES = 10_000
MAX_FRAME = 4096
EXAMPLES = 250

VICTIM_IDS = [str(uuid.uuid4()) for _ in range(4)]  # replaced by real ids in the fixture

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.text(max_size=20), st.sampled_from(["", "ack", "hello", "ping", "message", "welcome"]),
)
json_value = st.recursive(
    json_leaf, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                         kids, max_size=4),
    max_leaves=10,
)
typed = st.fixed_dictionaries(
    {"type": st.sampled_from(["ack", "hello", "ping", "message", "welcome", "error", "x"])},
    optional={"id": st.one_of(json_value, st.uuids().map(str), st.sampled_from(VICTIM_IDS)),
              "token": st.one_of(json_value, st.just(issue_token("mallory", SECRET, 600))),
              "body": json_value},
)


@dataclass(frozen=True)
class ControlFlood:
    """``count`` WebSocket control frames (pings, or unsolicited pongs) sent back to back."""

    kind: str
    count: int


def _deep(n: int, kind: int) -> str:
    """JSON nested ``n`` deep (issue 13: 8,000 levels once escaped as a RecursionError)."""
    if kind == 0:
        return "[" * n + "]" * n
    if kind == 1:
        return '{"a":' * n + "1" + "}" * n
    return '{"type":"ack","id":' + "[" * n + "]" * n + "}"


Frame = str | bytes | ControlFlood
deep = st.builds(_deep, st.integers(30, 2000), st.integers(0, 2)).filter(
    lambda f: len(f) <= MAX_FRAME)
control_flood = st.builds(ControlFlood, st.sampled_from(["ping", "pong"]), st.integers(1, 300))
frame = st.one_of(
    deep,
    control_flood,
    typed.map(json.dumps),
    json_value.map(json.dumps),
    st.text(max_size=60),
    st.binary(max_size=60),
    st.integers(4100, 9000).map(lambda n: json.dumps({"type": "ping", "pad": "x" * n})),  # 1009
)

MUTANTS = 40  # derived frames per example, besides the drawn ones


def mutate(rng: random.Random, drawn: list[Frame]) -> str | bytes:
    """A frame derived from the drawn ones: truncated, spliced, bit-flipped, re-typed."""
    pool = [f for f in drawn if not isinstance(f, ControlFlood)] or ['{"type":"ping"}']
    base = rng.choice(pool)
    text = base if isinstance(base, str) else base.decode("latin-1")
    op = rng.randrange(7)
    if op == 0:
        return text[: rng.randrange(len(text) + 1)]
    if op == 1:
        other = rng.choice(pool)
        return text + (other if isinstance(other, str) else other.decode("latin-1"))
    if op == 2 and text:
        i = rng.randrange(len(text))
        return text[:i] + chr(rng.randrange(0x20, 0x2FFF)) + text[i + 1:]
    if op == 3:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    if op == 4:
        return json.dumps({"type": "ack", "id": rng.choice([*VICTIM_IDS, text[:36], ""])})
    if op == 5:
        return json.dumps({"type": rng.choice(["ack", "hello", "ping"]),
                           rng.choice(["id", "token", "type"]): rng.choice(
                               [None, 1, 1.5, [], {}, text[:20], True])})
    return json.dumps({"type": "ping"})


class Fuzzer:
    """A background loop holding the gateway, the good connection and the hostile ones."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.frames = 0
        self.control_frames = 0
        self.hostile_closes: dict[int | None, int] = {}
        self.checks = 0
        self.victims: list[uuid.UUID] = []
        self._cm: Any = None
        self.h: Harness | None = None
        self.good: ClientConnection | None = None
        self.good_conn = ""

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def start(self) -> None:
        cfg = GatewayConfig(max_frame_bytes=MAX_FRAME, rate_per_s=1e6, rate_burst=100_000,
                            hello_timeout_s=2, replay_tail_s=0)
        self._cm = gateway_harness(self.store, cfg)
        self.h = await self._cm.__aenter__()
        self.good, welcome = await self.h.client("bob")
        self.good_conn = welcome["conn"]

    async def stop(self) -> None:
        if self.good is not None:
            await self.good.close()
        if self._cm is not None:
            await self._cm.__aexit__(None, None, None)

    async def hostile(self, frames: list[Frame], authenticate: bool) -> None:
        """Send every frame, each one processed by the gateway: a frame that ends the socket
        (oversized, or a bad first frame) is awaited until the close, then the rest goes on a
        new socket. The first socket says hello only if ``authenticate``; later ones always do.
        """
        assert self.h is not None
        todo = list(frames)
        while todo:
            ws = await connect(self.h.url, compression=None, max_size=None)
            welcomed = asyncio.Event()
            reader = asyncio.create_task(self._drain(ws, welcomed))
            try:
                if authenticate:
                    await ws.send(json.dumps({"type": "hello", "token": self.h.token("mallory")}))
                    await asyncio.wait_for(welcomed.wait(), 5)
                authenticate = True
                while todo:
                    f = todo.pop(0)
                    if isinstance(f, ControlFlood):  # the gateway answers (or drops) these
                        for _ in range(f.count):
                            await (ws.ping() if f.kind == "ping" else ws.pong())
                            self.control_frames += 1
                        continue
                    await ws.send(f)
                    self.frames += 1
                    size = len(f.encode() if isinstance(f, str) else f)
                    if not welcomed.is_set() or size > MAX_FRAME:
                        # The gateway decides on this frame: wait for its answer.
                        waiter = asyncio.ensure_future(welcomed.wait())
                        done, _ = await asyncio.wait(
                            [reader, waiter], timeout=5, return_when=asyncio.FIRST_COMPLETED)
                        waiter.cancel()
                        assert done, "gateway neither answered nor closed"
                        if reader.done():
                            break
            except ConnectionClosed:
                pass
            finally:
                await ws.close()
                await reader
                code = ws.close_code
                self.hostile_closes[code] = self.hostile_closes.get(code, 0) + 1

    async def _drain(self, ws: ClientConnection, welcomed: asyncio.Event) -> None:
        try:
            async for raw in ws:
                if isinstance(raw, str) and raw.startswith('{"type": "welcome"'):
                    welcomed.set()
        except ConnectionClosed:
            pass

    async def check_good(self) -> None:
        """The good connection still receives a live frame and its ack is recorded."""
        h, ws = self.h, self.good
        assert h is not None and ws is not None
        msg = await asyncio.to_thread(h.accept, "bob", {"check": self.checks})
        await asyncio.to_thread(h.deliver, msg, [self.good_conn])
        while True:
            got = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if got["type"] == "message" and got["id"] == str(msg.id):
                break
        await ws.send(json.dumps({"type": "ack", "id": got["id"]}))
        await h.wait_db(lambda: self.store.get(msg.id).state == State.DELIVERED)  # type: ignore[union-attr]
        self.checks += 1


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzer]:
    from delivery import migrate
    from delivery.db import make_engine

    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    fz = Fuzzer(Store(engine))
    fz.call(fz.start())
    assert fz.h is not None
    # Messages for a user who never connects: hostile acks must not deliver them.
    for i in range(len(VICTIM_IDS)):
        msg = fz.h.accept("victim", i)
        VICTIM_IDS[i] = str(msg.id)
        fz.victims.append(msg.id)
    yield fz
    fz.call(fz.stop())
    fz.loop.call_soon_threadsafe(fz.loop.stop)
    fz.thread.join(5)
    engine.dispose()


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(drawn=st.lists(frame, min_size=5, max_size=12), authenticate=st.booleans(),
       rng=st.randoms(use_true_random=False))
def test_fuzz_frames_do_not_disturb_others(
    fuzzer: Fuzzer, drawn: list[Frame], authenticate: bool, rng: random.Random
) -> None:
    frames: list[Frame] = [*drawn, *(mutate(rng, drawn) for _ in range(MUTANTS))]
    rng.shuffle(frames)
    fuzzer.call(fuzzer.hostile(frames, authenticate))
    if fuzzer.frames // 1000 != (fuzzer.frames - len(frames)) // 1000 or fuzzer.checks == 0:
        fuzzer.call(fuzzer.check_good())


def test_fuzz_summary(fuzzer: Fuzzer) -> None:
    """Runs after the fuzz test (file order): totals, and the invariants at the end."""
    fuzzer.call(fuzzer.check_good())
    assert fuzzer.h is not None
    for mid in fuzzer.victims:
        rec = fuzzer.store.get(mid)
        assert rec is not None and rec.state == State.ACCEPTED, rec
    # Hostile connections never stay tracked, on the gateway's replica nor on the worker's.
    h = fuzzer.h
    assert h.conns_seen("mallory", h.presence) <= set(h.gateway.conns)
    fuzzer.call(h.wait_for(lambda: h.conns_seen("mallory") <= set(h.gateway.conns)))
    print(f"\nfuzz: {fuzzer.frames} generated frames and {fuzzer.control_frames} control "
          f"frames sent on "
          f"{sum(fuzzer.hostile_closes.values())} hostile connections "
          f"(close codes {fuzzer.hostile_closes}); {fuzzer.checks} good-connection checks")
    assert fuzzer.frames >= MIN_FRAMES
