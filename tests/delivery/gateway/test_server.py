"""The in-process gateway over real sockets: handshake, auth, ack, replay, window, nack, redirect,
bad input and graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from delivery.gateway import GatewayConfig, issue_token
from delivery.models import State
from delivery.secret import new_secret
from delivery.store import Store
from tests.delivery.gateway.conftest import (
    SECRET,
    gateway_harness,
    recv_json,
    recv_messages,
    run,
)


async def closed_with(ws, timeout: float = 5.0) -> tuple[int | None, str]:  # type: ignore[no-untyped-def]
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed:
        pass
    return ws.close_code, ws.close_reason or ""


def test_handshake_welcome_and_presence(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            ws1, w1 = await h.client("bob")
            ws2, w2 = await h.client("bob")
            assert w1["user"] == "bob" and w1["conn"].startswith("gw1.")
            assert w1["conn"] != w2["conn"]
            # Tracked at welcome: the gateway's own replica lists both at once...
            tracked = {p.conn: p for p in h.presence.list("bob")}
            assert set(tracked) == {w1["conn"], w2["conn"]}
            assert tracked[w1["conn"]].node == "gw1"
            assert dict(tracked[w1["conn"]].meta) == {"node": "gw1"}
            # ...and the rest of the cluster (a worker's replica) hears of them.
            await h.wait_presence("bob", {w1["conn"], w2["conn"]})
            seen = {p.conn: p for p in h.replica.list("bob")}
            assert seen[w2["conn"]].node == "gw1" and dict(seen[w2["conn"]].meta) == {"node": "gw1"}
            await ws1.send('{"type":"ping"}')
            assert await recv_json(ws1) == {"type": "pong"}
            await ws1.close()
            await h.wait_presence("bob", {w2["conn"]})
            assert ("leave", "bob", w1["conn"]) in h.worker_events.log
            await ws2.close()

    run(main())


@pytest.mark.parametrize("case", ["missing", "forged", "expired", "other-secret", "no-hello",
                                  "not-hello", "not-json", "empty-token"])
def test_auth_failures_close_1008_without_presence(sqlite_store: Store, case: str) -> None:
    async def main() -> None:
        cfg = GatewayConfig(hello_timeout_s=0.3, replay_tail_s=0)
        async with gateway_harness(sqlite_store, cfg) as h:
            ws = await connect(h.url)
            good = issue_token("bob", SECRET, 60)
            frames = {
                "missing": {"type": "hello"},
                "forged": {"type": "hello", "token": good[:-3] + ("AAA" if good[-3:] != "AAA"
                                                                   else "BBB")},
                "expired": {"type": "hello", "token": issue_token("bob", SECRET, 1, now=1000.0)},
                "other-secret": {"type": "hello", "token": issue_token("bob", new_secret(), 60)},
                "not-hello": {"type": "ack", "id": str(uuid.uuid4())},
                "empty-token": {"type": "hello", "token": ""},
            }
            if case == "not-json":
                await ws.send("{nope")
            elif case in frames:
                await ws.send(json.dumps(frames[case]))
            code, reason = await closed_with(ws)
            expected = {"missing": "missing token", "expired": "token expired",
                        "forged": "invalid token", "other-secret": "invalid token",
                        "no-hello": "no hello", "not-hello": "first frame must be a hello",
                        "not-json": "first frame must be a hello",
                        "empty-token": "missing token"}[case]
            assert code == (1007 if case == "not-json" else 1008), (code, reason)
            assert expected in reason
            assert h.gateway.conns == {}
            await h.wait_for(lambda: h.gateway.stats["rejected"] == 1)
            # A barrier: once the worker sees a later (authenticated) connection, it has seen
            # every earlier change of the gateway's replica, in order.
            ok, w = await h.client("carol")
            await h.wait_presence("carol", {w["conn"]})
            assert h.gw_events.log == [("join", "carol", w["conn"])]
            assert h.worker_events.log == [("join", "carol", w["conn"])]
            assert h.conns_seen("bob", h.presence) == set() and h.conns_seen("bob") == set()
            await ok.close()

    run(main())


def test_deliver_and_ack_marks_delivered(store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(store) as h:
            ws, w = await h.client("bob")
            msg = h.accept("bob", {"text": "hello bob"})
            h.deliver(msg, [w["conn"]])
            (frame,) = await recv_messages(ws, 1)
            assert frame == {"type": "message", "id": str(msg.id), "from": "alice",
                             "body": {"text": "hello bob"}, "sent_at": msg.created_at.isoformat()}
            await ws.send(json.dumps({"type": "ack", "id": frame["id"]}))
            await h.wait_db(lambda: store.get(msg.id).state == State.DELIVERED)  # type: ignore[union-attr]
            rec = store.get(msg.id)
            assert rec is not None and rec.delivered_conn == w["conn"]
            (att,) = store.attempts_of(msg.id)
            assert att.result == "acked" and att.conn == w["conn"]
            await h.wait_for(lambda: h.acks == [(str(msg.id), w["conn"], True)])
            await ws.close()

    run(main())


def test_ack_of_another_users_message_changes_nothing(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            msg = h.accept("bob")
            mallory, _ = await h.client("mallory")
            await mallory.send(json.dumps({"type": "ack", "id": str(msg.id)}))
            await h.wait_for(lambda: len(h.acks) == 1)
            assert h.acks[0][2] is False
            rec = sqlite_store.get(msg.id)
            assert rec is not None and rec.state == State.ACCEPTED and rec.delivered_at is None
            bob, _ = await h.client("bob")
            (frame,) = await recv_messages(bob, 1)  # bob still gets it (replay)
            assert frame["id"] == str(msg.id)
            await bob.close()
            await mallory.close()

    run(main())


def test_replay_oldest_first_then_acked(store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(store) as h:
            msgs = [h.accept("bob", {"n": i}) for i in range(12)]
            h.accept("carol", "not for bob")
            ws, _ = await h.client("bob")
            frames = await recv_messages(ws, 12)
            assert [f["id"] for f in frames] == [str(m.id) for m in msgs]
            assert [f["body"]["n"] for f in frames] == list(range(12))
            for f in frames:
                await ws.send(json.dumps({"type": "ack", "id": f["id"]}))
            await h.wait_db(lambda: store.count_by_state().get("delivered") == 12)
            with pytest.raises(TimeoutError):
                await recv_json(ws, 0.3)  # nothing else (carol's message stays hers)
            await ws.close()

    run(main())


def test_in_flight_window(sqlite_store: Store) -> None:
    async def main() -> None:
        cfg = GatewayConfig(max_in_flight=3, replay_batch=2, replay_tail_s=0)
        async with gateway_harness(sqlite_store, cfg) as h:
            msgs = [h.accept("bob", i) for i in range(8)]
            ws, w = await h.client("bob")
            first = await recv_messages(ws, 3)
            with pytest.raises(TimeoutError):
                await recv_json(ws, 0.3)
            # A live frame also waits for the window.
            live = h.accept("bob", "live")
            h.deliver(live, [w["conn"]])
            with pytest.raises(TimeoutError):
                await recv_json(ws, 0.2)
            await ws.send(json.dumps({"type": "ack", "id": first[0]["id"]}))
            (nxt,) = await recv_messages(ws, 1)
            with pytest.raises(TimeoutError):
                await recv_json(ws, 0.2)
            got = [f["id"] for f in first] + [nxt["id"]]
            pending = [f["id"] for f in first[1:]] + [nxt["id"]]
            for _ in range(20):
                await ws.send(json.dumps({"type": "ack", "id": pending.pop(0)}))
                try:
                    (f,) = await recv_messages(ws, 1, timeout=1)
                except TimeoutError:
                    if not pending:
                        break
                    continue
                got.append(f["id"])
                pending.append(f["id"])
            assert sorted(got) == sorted([str(m.id) for m in [*msgs, live]])
            assert len(got) == len(set(got))
            await ws.close()

    run(main())


def test_live_and_replay_deduplicated(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            ws, w = await h.client("bob")
            msg = h.accept("bob")
            h.deliver(msg, [w["conn"]])
            h.deliver(msg, [w["conn"]])  # a retry while the first is in flight
            frames = []
            with pytest.raises(TimeoutError):
                while True:
                    frames.append(await recv_json(ws, 0.4))
            assert [f["id"] for f in frames] == [str(msg.id)]
            await ws.close()

    run(main())


def test_nack_for_a_closed_connection(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            ws, w = await h.client("bob")
            await ws.close()
            await h.wait_for(lambda: not h.gateway.conns)
            msg = h.accept("bob")
            attempt = h.deliver(msg, [w["conn"]])
            await h.wait_for(lambda: len(h.nacks) == 1)
            assert h.nacks[0] == {"message_id": str(msg.id), "attempt": attempt,
                                  "nacked": [w["conn"]], "node": "gw1"}
            (att,) = sqlite_store.attempts_of(msg.id)
            assert att.result == "nacked" and att.finished_at is not None

    run(main())


def test_unknown_conn_and_wrong_user_are_nacked(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            ws, w = await h.client("mallory")
            msg = h.accept("bob")
            h.deliver(msg, [w["conn"], "gw1.0000000000000000"])  # mallory's conn is not bob's
            await h.wait_for(lambda: len(h.nacks) == 1)
            assert sorted(h.nacks[0]["nacked"]) == sorted([w["conn"], "gw1.0000000000000000"])
            with pytest.raises(TimeoutError):
                await recv_json(ws, 0.3)
            await ws.close()

    run(main())


def test_redirect_to_other_live_connection(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            a, wa = await h.client("bob")
            b, wb = await h.client("bob")
            await a.close()
            await h.wait_for(lambda: wa["conn"] not in h.gateway.conns)
            msg = h.accept("bob")
            attempt = h.deliver(msg, [wa["conn"]])
            (frame,) = await recv_messages(b, 1)
            assert frame["id"] == str(msg.id)
            rows = sqlite_store.attempts_of(msg.id)
            assert [(r.attempt, r.conn, r.result) for r in rows] == [
                (attempt, wa["conn"], "nacked"), (attempt, wb["conn"], None)]
            assert rows[0].detail == f"redirected to {wb['conn']}"
            await b.send(json.dumps({"type": "ack", "id": frame["id"]}))
            await h.wait_db(lambda: sqlite_store.get(msg.id).state == State.DELIVERED)  # type: ignore[union-attr]
            rows = sqlite_store.attempts_of(msg.id)
            assert rows[1].result == "acked" and h.nacks == []
            assert h.gateway.stats["redirects"] == 1
            await b.close()

    run(main())


def test_unacked_live_frame_is_nacked_when_connection_closes(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            ws, w = await h.client("bob")
            msg = h.accept("bob")
            attempt = h.deliver(msg, [w["conn"]])
            await recv_messages(ws, 1)
            await ws.close()  # without acking
            await h.wait_for(lambda: len(h.nacks) == 1)
            assert h.nacks[0]["attempt"] == attempt and h.nacks[0]["nacked"] == [w["conn"]]

    run(main())


def test_bad_input_gets_error_frames_and_connection_survives(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            ws, _ = await h.client("bob")
            cases = [
                ("{not json", "invalid_json"),
                ("[1,2]", "invalid_frame"),
                ('{"type": 5}', "invalid_frame"),
                ('{"type": "dance"}', "unknown_type"),
                ('{"type": "ack"}', "invalid_frame"),
                ('{"type": "ack", "id": 7}', "invalid_frame"),
                ('{"type": "ack", "id": "nope"}', "bad_id"),
                ('{"type": "hello", "token": "x"}', "already_authenticated"),
                (b"\x00\x01", "binary_not_supported"),
            ]
            for raw, code in cases:
                await ws.send(raw)
                f = await recv_json(ws)
                assert f["type"] == "error" and f["code"] == code, (raw, f)
                assert isinstance(f["message"], str)
            await ws.send('{"type":"ping"}')
            assert (await recv_json(ws))["type"] == "pong"
            await ws.close()

    run(main())


def test_oversized_frame_closes_1009(sqlite_store: Store) -> None:
    async def main() -> None:
        cfg = GatewayConfig(max_frame_bytes=1024, replay_tail_s=0)
        async with gateway_harness(sqlite_store, cfg) as h:
            ws, w = await h.client("bob")
            other, _ = await h.client("carol")
            await ws.send(json.dumps({"type": "ping", "pad": "x" * 2000}))
            code, _ = await closed_with(ws)
            assert code == 1009
            await h.wait_for(lambda: w["conn"] not in h.gateway.conns)
            await other.send('{"type":"ping"}')
            assert (await recv_json(other))["type"] == "pong"
            await other.close()

    run(main())


def test_flood_gets_error_then_1008(sqlite_store: Store) -> None:
    async def main() -> None:
        cfg = GatewayConfig(rate_per_s=20, rate_burst=10, flood_strikes=20, replay_tail_s=0)
        async with gateway_harness(sqlite_store, cfg) as h:
            ws, w = await h.client("bob")
            # Else a fast close can fold the join and the leave into one presence delta.
            await h.wait_presence("bob", {w["conn"]})
            for _ in range(60):
                try:
                    await ws.send('{"type":"ping"}')
                except ConnectionClosed:
                    break
            frames = []
            try:
                while True:
                    frames.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
            except ConnectionClosed:
                pass
            assert ws.close_code == 1008
            assert "rate limit" in (ws.close_reason or "")
            assert [f["code"] for f in frames if f["type"] == "error"] == ["rate_limited"]
            await h.wait_presence("bob", set())
            assert ("leave", "bob", w["conn"]) in h.worker_events.log

    run(main())


def test_idle_timeout_closes(sqlite_store: Store) -> None:
    async def main() -> None:
        cfg = GatewayConfig(idle_timeout_s=0.4, replay_tail_s=0)
        async with gateway_harness(sqlite_store, cfg) as h:
            ws, _ = await h.client("bob")
            code, reason = await closed_with(ws, 3)
            assert (code, reason) == (1000, "idle timeout")

    run(main())


def test_graceful_shutdown_closes_1001_and_untracks(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            a, wa = await h.client("bob")
            b, wb = await h.client("carol")
            msg = h.accept("bob")
            attempt = h.deliver(msg, [wa["conn"]])
            await recv_messages(a, 1)
            await h.gateway.stop()
            for ws in (a, b):
                code, reason = await closed_with(ws)
                assert code == 1001 and "shutting down" in reason
            # Untracked before the closes (the gateway's replica at once, the worker's soon),
            # while the gateway's presence node is still up: routing stops picking them.
            assert h.presence.list_all() == []
            await h.wait_for(lambda: h.replica.list_all() == [])
            for user, conn in (("bob", wa["conn"]), ("carol", wb["conn"])):
                assert ("leave", user, conn) in h.gw_events.log
                assert ("leave", user, conn) in h.worker_events.log
            assert any(r.startswith("gw1:") for r in h.replica.stats()["replicas_up"])
            # The unacked frame is answered at once, not left to the ack deadline.
            assert h.nacks == [{"message_id": str(msg.id), "attempt": attempt,
                                "nacked": [wa["conn"]], "node": "gw1"}]
            with pytest.raises(OSError):
                await connect(h.url, open_timeout=1)

    run(main())


def test_http_demo_page_and_client_js(sqlite_store: Store) -> None:
    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            base = f"http://127.0.0.1:{h.gateway.port}"

            def get(path: str) -> tuple[int, str, str]:
                try:
                    with urllib.request.urlopen(base + path, timeout=5) as r:
                        return r.status, r.headers["Content-Type"], r.read().decode()
                except urllib.error.HTTPError as e:
                    return e.code, "", ""

            status, ctype, body = await asyncio.to_thread(get, "/")
            assert status == 200 and ctype.startswith("text/html") and "client.js" in body
            status, ctype, body = await asyncio.to_thread(get, "/client.js")
            assert status == 200 and "javascript" in ctype and "export" in body
            assert (await asyncio.to_thread(get, "/nope"))[0] == 404

    run(main())


def test_acks_recorded_in_concurrent_full_batches(store: Store) -> None:
    """Small batches, two flushes at a time (one on SQLite): every ack is recorded once, in
    several batches."""
    async def main() -> None:
        cfg = GatewayConfig(ack_batch_max=3, ack_flushes=2, replay_tail_s=0)
        async with gateway_harness(store, cfg) as h:
            msgs = [h.accept("bob", i) for i in range(10)]
            ws, w = await h.client("bob")
            frames = await recv_messages(ws, 10)
            for f in frames:
                await ws.send(json.dumps({"type": "ack", "id": f["id"]}))
            await h.wait_db(lambda: store.count_by_state() == {"delivered": 10})
            await h.wait_for(lambda: len(h.acks) == 10)
            assert sorted(m for m, _, _ in h.acks) == sorted(str(m.id) for m in msgs)
            assert all(won and conn == w["conn"] for _, conn, won in h.acks)
            assert h.gateway.stats["ack_batches"] >= 4
            await ws.close()

    run(main())


def test_stop_records_acks_still_waiting_for_their_batch(sqlite_store: Store) -> None:
    async def main() -> None:
        cfg = GatewayConfig(ack_batch_s=30, replay_tail_s=0)  # the window would not close
        async with gateway_harness(sqlite_store, cfg) as h:
            msg = h.accept("bob")
            ws, _ = await h.client("bob")
            (frame,) = await recv_messages(ws, 1)
            await ws.send(json.dumps({"type": "ack", "id": frame["id"]}))
            await h.wait_for(lambda: h.gateway._acks != [])
            await h.gateway.stop()
            rec = sqlite_store.get(msg.id)
            assert rec is not None and rec.state == State.DELIVERED

    run(main())
