"""Hostile input at the gateway (issue 13, findings 5, 6, 8): deep JSON, control-frame floods,
expired tokens, non-GET methods and foreign Origins. Real sockets, an in-process gateway."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import urllib.error
import urllib.request
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode

from delivery.gateway import GatewayConfig
from delivery.gateway.guard import RateBudget, origin_allowed
from delivery.store import Store
from tests.delivery.gateway.conftest import gateway_harness, recv_json, run

DEEP = ["[" * 8000 + "]" * 8000, '{"a":' * 2500 + "1" + "}" * 2500,
        '{"type":"ack","id":' + "[" * 5000 + "]" * 5000 + "}"]


class CountingClient(ClientConnection):
    """Counts the control-frame pongs the gateway sends (websockets hides them otherwise)."""

    pongs = 0

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PONG:
            self.pongs += 1
        super().process_event(event)


async def closed_with(ws: ClientConnection, timeout: float = 10.0) -> tuple[int | None, str]:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed:
        pass
    return ws.close_code, ws.close_reason or ""


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


# -- finding 5: deep JSON -------------------------------------------------------------------------

@pytest.mark.parametrize("frame", DEEP, ids=["list", "object", "ack-id"])
def test_deep_json_before_hello_gets_invalid_json_then_1007(
    sqlite_store: Store, caplog: pytest.LogCaptureFixture, frame: str,
) -> None:
    """Fault: 8,000 levels raised RecursionError: close 1011 and a traceback per connection.
    Traffic: the frame as the first frame. Must hold: error `invalid_json`, close 1007, nothing
    logged at ERROR, the gateway keeps serving."""
    caplog.set_level(logging.INFO)

    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            ws = await connect(h.url, compression=None)
            await ws.send(frame)
            err = await recv_json(ws)
            assert err["type"] == "error" and err["code"] == "invalid_json", err
            code, reason = await closed_with(ws)
            assert code == 1007 and "not valid JSON" in reason, (code, reason)
            ok, _ = await h.client("carol")
            await ok.close()
        no_errors_logged(caplog)

    run(main())


def test_deep_json_after_hello_gets_invalid_json_and_the_connection_stays(
    sqlite_store: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            ws, _ = await h.client("bob")
            for frame in DEEP:
                await ws.send(frame)
                err = await recv_json(ws)
                assert err["type"] == "error" and err["code"] == "invalid_json", err
            await ws.send('{"type":"ping","x":' + "[" * 31 + "]" * 31 + "}")  # at the limit (32)
            assert await recv_json(ws) == {"type": "pong"}
            await ws.close()
        no_errors_logged(caplog)

    run(main())


# -- finding 6: control frames share the rate budget ---------------------------------------------

@pytest.mark.parametrize("hello", [False, True], ids=["before-hello", "after-hello"])
def test_ping_flood_gets_bounded_pongs_then_1008(sqlite_store: Store, hello: bool) -> None:
    """Fault: WebSocket pings bypassed the 200 frames/s limit (915k pongs in 15 s on 10
    connections; 461k before the hello deadline). Traffic: 3,000 pings as fast as the socket
    takes them. Must hold: at most burst + rate x elapsed pongs, then close 1008."""
    cfg = GatewayConfig(rate_per_s=20, rate_burst=10, flood_strikes=50, replay_tail_s=0,
                        hello_timeout_s=30)

    async def main() -> None:
        async with gateway_harness(sqlite_store, cfg) as h:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            ws = await connect(h.url, compression=None, create_connection=CountingClient,
                               ping_interval=None)
            assert isinstance(ws, CountingClient)
            if hello:
                await ws.send(json.dumps({"type": "hello", "token": h.token("bob")}))
                assert (await recv_json(ws))["type"] == "welcome"
            sent = 0
            try:
                for _ in range(3000):
                    await ws.ping()
                    sent += 1
            except ConnectionClosed:
                pass
            code, reason = await closed_with(ws)
            elapsed = loop.time() - t0
            bound = cfg.rate_burst + cfg.rate_per_s * elapsed + 2  # +hello
            print(f"\nping flood ({'after' if hello else 'before'} hello): {sent} pings sent, "
                  f"{ws.pongs} pongs in {elapsed:.2f}s (bound {bound:.0f}), close {code}")
            assert ws.pongs <= bound, (ws.pongs, bound)
            assert code == 1008 and "rate limit" in reason, (code, reason)
            assert h.gateway.conns == {}
            ok, _ = await h.client("carol")  # others unaffected
            await ok.close()

    run(main())


def test_pings_and_data_frames_draw_on_one_budget(sqlite_store: Store) -> None:
    """A connection that spent its budget on data frames gets no pong for a WebSocket ping:
    the ping is answered (or not) before the data frame sent after it."""
    cfg = GatewayConfig(rate_per_s=0.001, rate_burst=6, flood_strikes=1000, replay_tail_s=0)

    async def main() -> None:
        async with gateway_harness(sqlite_store, cfg) as h:
            ws = await connect(h.url, compression=None, create_connection=CountingClient,
                               ping_interval=None)
            assert isinstance(ws, CountingClient)
            await ws.send(json.dumps({"type": "hello", "token": h.token("bob")}))
            assert (await recv_json(ws))["type"] == "welcome"
            await ws.ping()
            await ws.send('{"type":"ping"}')
            assert await recv_json(ws) == {"type": "pong"}
            assert ws.pongs == 1  # in budget: answered, and counted
            for _ in range(4):
                await ws.send('{"type":"ping"}')
                assert await recv_json(ws) == {"type": "pong"}
            await ws.ping()  # budget spent: dropped
            await ws.send('{"type":"ping"}')
            err = await recv_json(ws)
            assert err["code"] == "rate_limited", err
            assert ws.pongs == 1
            await ws.close()

    run(main())


def test_rate_budget_is_a_token_bucket_with_strikes() -> None:
    b = RateBudget(rate_per_s=10, burst=2, now=0.0)
    assert b.take(0.0) and b.take(0.0) and not b.take(0.0) and not b.take(0.0)
    assert b.strikes == 2
    assert b.take(0.1) and not b.take(0.1)  # one token back after 0.1 s
    assert b.take(1.0) and b.strikes == 0  # full again: strikes forgiven


# -- finding 8: token expiry, HTTP methods, Origin -------------------------------------------------

def test_connection_is_closed_when_its_token_expires(sqlite_store: Store) -> None:
    """Fault: a connection stayed authenticated after its token expired. Must hold: close
    1008 "token expired" once the expiry passes, and the connection leaves presence."""

    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            ws = await connect(h.url, compression=None)
            await ws.send(json.dumps({"type": "hello", "token": h.token("bob", ttl=1.0)}))
            welcome = await recv_json(ws)
            assert welcome["type"] == "welcome"
            long, w2 = await h.client("bob")  # a 600 s token: stays
            code, reason = await closed_with(ws, timeout=15)
            assert (code, reason) == (1008, "token expired")
            await h.wait_presence("bob", {w2["conn"]})
            await long.send('{"type":"ping"}')
            assert await recv_json(long) == {"type": "pong"}
            await long.close()

    run(main())


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
def test_non_get_methods_get_405(sqlite_store: Store, method: str) -> None:
    """Fault: every HTTP method got the demo page."""

    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            base = f"http://127.0.0.1:{h.gateway.port}"
            for path in ("/", "/ws", "/client.js", "/healthz"):
                req = urllib.request.Request(base + path, method=method)
                with pytest.raises(urllib.error.HTTPError) as info:
                    await asyncio.to_thread(urllib.request.urlopen, req, timeout=10)
                assert info.value.code == 405 and info.value.headers["Allow"] == "GET"
            resp = await asyncio.to_thread(urllib.request.urlopen, base + "/", timeout=10)
            assert resp.status == 200  # GET still works
            resp.close()

    run(main())


def test_origin_allow_list(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            # Empty list (default): any Origin.
            ws, _ = await h.client("bob", origin="https://evil.example")
            await ws.close()
            h.runtime.settings = dataclasses.replace(
                h.runtime.settings, allowed_origins="https://chat.example.com, http://x:8080/")
            with pytest.raises(InvalidStatus) as info:
                await h.client("bob", origin="https://evil.example")
            assert info.value.response.status_code == 403
            for origin in ("https://chat.example.com", "http://X:8080", None):
                ws, _ = await h.client("bob", origin=origin)  # None: not a browser
                await ws.close()

    run(main())


def test_origin_allowed_rules() -> None:
    assert origin_allowed("https://a.example", ())
    assert origin_allowed(None, ("https://a.example",))
    assert origin_allowed("https://A.example/", ("https://a.example",))
    assert not origin_allowed("https://a.example.evil", ("https://a.example",))
    assert not origin_allowed("null", ("https://a.example",))
