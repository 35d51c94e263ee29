"""``delivery api`` as a real process on PostgreSQL and Redis: durable ids, idempotent retries,
auth with rotated keys, errors naming the field, 503 under a database outage, 429 under
overload, 503 ``queue_full`` past DELIVERY_MAX_BACKLOG, its metrics and its OpenAPI document."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from delivery.api import create_conversation
from delivery.secret import new_secret
from delivery.store import Store
from delivery.validation import MESSAGE_NAMESPACE
from workers.devkit.cluster import LocalCluster
from workers.devkit.procs import ROOT, Proc, free_port
from workers.devkit.services import REDIS_URL, PrivateRedis, ServiceEnv, database_outage

pytestmark = pytest.mark.slow

KEY_OLD, KEY_NEW = new_secret(), new_secret()


class Api:
    def __init__(self, url: str, proc: Proc, db_url: str, metrics_port: str) -> None:
        self.url, self.proc, self.db_url = url, proc, db_url
        self.metrics_port = metrics_port
        self.client = httpx.Client(base_url=url, timeout=30)

    def post(self, payload: Any, key: str | None = KEY_NEW, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return self.client.post("/v1/messages", json=payload, headers=headers, **kw)

    def stored(self, msg_id: str) -> int:
        with psycopg.connect(self.db_url) as conn:
            row = conn.execute("SELECT count(*) FROM messages WHERE id = %s",
                               (msg_id,)).fetchone()
            assert row is not None
            return int(row[0])


@contextmanager
def start(own_pg: tuple[str, Store], key_prefix: str, **extra: str) -> Iterator[Api]:
    db_url = own_pg[0]
    env = ServiceEnv(db_url, REDIS_URL, key_prefix).env(
        DELIVERY_API_KEYS=f"{KEY_NEW},{KEY_OLD}", **extra)
    with LocalCluster(env) as cluster:
        url, proc = cluster.start_api()
        api = Api(url, proc, db_url, env.get("DELIVERY_METRICS_PORT", ""))
        try:
            yield api
        finally:
            api.client.close()


@pytest.fixture
def api(own_pg: tuple[str, Store], key_prefix: str) -> Iterator[Api]:
    with start(own_pg, key_prefix, DELIVERY_METRICS_PORT=str(free_port())) as api:
        yield api


def test_answers_the_durable_id_and_a_retry_stores_once(api: Api) -> None:
    msg = {"sender": "alice", "recipient": "bob", "body": {"text": "hi"},
           "client_msg_id": "alice-1"}
    first = api.post(msg)
    assert first.status_code == 202, first.text
    msg_id = first.json()["id"]
    assert msg_id == str(uuid.uuid5(MESSAGE_NAMESPACE, "alice\x00alice-1"))
    assert api.stored(msg_id) == 1  # durable when answered
    again = api.post(msg, key=KEY_OLD)  # a retry, with the other key of a rotation
    assert again.status_code == 202 and again.json()["id"] == msg_id
    assert api.stored(msg_id) == 1


def test_a_group_message_is_stored_once_for_every_member_but_the_sender(
        api: Api, own_pg: tuple[str, Store]) -> None:
    store = own_pg[1]
    create_conversation("team-7", ["alice", "bob", "carol"], store=store)
    msg = {"sender": "alice", "conversation": "team-7", "body": {"text": "hi all"},
           "client_msg_id": "g-1"}
    first = api.post(msg)
    assert first.status_code == 202, first.text
    msg_id = first.json()["id"]
    assert msg_id == str(uuid.uuid5(MESSAGE_NAMESPACE, "alice\x00g-1"))
    assert {r.recipient for r in store.group_rows(uuid.UUID(msg_id))} == {"bob", "carol"}
    again = api.post(msg)
    assert again.status_code == 202 and again.json()["id"] == msg_id
    assert len(store.group_rows(uuid.UUID(msg_id))) == 2
    outsider = api.post({**msg, "sender": "mallory", "client_msg_id": "g-2"})
    assert outsider.status_code == 400 and outsider.json()["field"] == "sender"


def test_without_a_valid_server_key_nothing_is_stored(api: Api) -> None:
    msg = {"sender": "alice", "recipient": "bob", "body": 1, "client_msg_id": "auth-1"}
    for key in (None, "x" * 43, KEY_NEW[:-1]):
        res = api.post(msg, key=key)
        assert res.status_code == 401 and res.json()["error"] == "unauthorized"
        assert res.headers["www-authenticate"].startswith("Bearer")
    assert api.stored(str(uuid.uuid5(MESSAGE_NAMESPACE, "alice\x00auth-1"))) == 0


@pytest.mark.parametrize("payload, status, field", [
    ({"sender": "", "recipient": "b", "body": 1}, 400, "sender"),
    ({"sender": "a", "recipient": "b\x00", "body": 1}, 400, "recipient"),
    ({"sender": "a", "recipient": "b", "body": "x" * 20_000}, 400, "body"),
    ({"sender": "a", "recipient": "b", "body": 1, "ttl_s": -1}, 400, "ttl_s"),
    ({"sender": "a", "recipient": "b", "body": 1, "client_msg_id": 7}, 400, "client_msg_id"),
    ({"sender": "a", "recipient": "b", "body": 1, "colour": "red"}, 400, "colour"),
    ({"sender": "a", "body": 1}, 400, "recipient"),
    ({"sender": "a", "conversation": "nope", "body": 1}, 400, "conversation"),
    ({"sender": "a", "conversation": "dm:a:b", "body": 1}, 400, "conversation"),
])
def test_bad_input_names_the_field(api: Api, payload: dict[str, Any], status: int,
                                   field: str) -> None:
    res = api.post(payload)
    assert res.status_code == status, res.text
    assert res.json()["field"] == field and res.json()["message"]


def test_not_json_and_too_large(api: Api) -> None:
    res = api.client.post("/v1/messages", content=b"{nope",
                          headers={"Authorization": f"Bearer {KEY_NEW}"})
    assert res.status_code == 400 and res.json()["error"] == "invalid_json"
    big = b'{"sender":"a","recipient":"b","body":"' + b"x" * 200_000 + b'"}'
    res = api.client.post("/v1/messages", content=big,
                          headers={"Authorization": f"Bearer {KEY_NEW}"})
    assert res.status_code == 413 and res.json()["field"] == "body"


def test_database_outage_answers_503_and_never_an_id(api: Api) -> None:
    marker = f"BODYMARK{uuid.uuid4().hex}"
    msg = {"sender": "alice", "recipient": "bob", "body": marker, "client_msg_id": "outage-1"}
    msg_id = str(uuid.uuid5(MESSAGE_NAMESPACE, "alice\x00outage-1"))
    with database_outage(api.db_url):
        for _ in range(3):
            res = api.post(msg)
            assert res.status_code == 503, res.text
            assert "id" not in res.json() and int(res.headers["retry-after"]) > 0
        health = api.client.get("/healthz")
        assert health.status_code == 503
    assert api.stored(msg_id) == 0
    res = api.post(msg)  # the producer's retry, same client_msg_id
    assert res.status_code == 202 and res.json()["id"] == msg_id
    assert api.stored(msg_id) == 1
    assert api.client.get("/healthz").status_code == 200
    too_big = api.post({"sender": "a", "recipient": "b", "body": marker * 500})
    assert too_big.status_code == 400 and marker not in too_big.text
    assert "not accepted" in api.proc.log()  # the log names the failure, never the body
    assert marker not in api.proc.log()


def test_broker_outage_still_answers_the_stored_id(own_pg: tuple[str, Store],
                                                   tmp_path: Path) -> None:
    """The broker is down after start-up: the message is stored, so the id is answered (the
    recovery sweep routes it once a worker runs); the enqueue failure is only logged."""
    broker = PrivateRedis(str(tmp_path), appendonly=False)
    broker.start()
    try:
        env = ServiceEnv(own_pg[0], broker.url, "api-broker-outage").env(
            DELIVERY_API_KEYS=KEY_NEW)
        with LocalCluster(env) as cluster:
            url, proc = cluster.start_api()
            api = Api(url, proc, own_pg[0], "")
            broker.stop()
            res = api.post({"sender": "a", "recipient": "b", "body": 1, "client_msg_id": "nb"})
            assert res.status_code == 202, res.text
            assert api.stored(res.json()["id"]) == 1
            api.client.close()
    finally:
        broker.stop()


def _blocked_backends(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND wait_event_type = 'Lock'").fetchone()
        assert row is not None
        return int(row[0])


def test_overload_answers_429_with_retry_after(own_pg: tuple[str, Store],
                                                 key_prefix: str) -> None:
    with start(own_pg, key_prefix, DELIVERY_API_MAX_IN_FLIGHT="1") as api:
        # Hold the messages table: the first send waits on the lock, filling the one slot.
        with psycopg.connect(api.db_url) as locker:
            locker.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
            results: list[httpx.Response] = []
            first = threading.Thread(target=lambda: results.append(api.post(
                {"sender": "a", "recipient": "b", "body": 1, "client_msg_id": "slow"})))
            first.start()
            api.proc.wait_until(lambda: _blocked_backends(api.db_url) > 0)
            res = api.post({"sender": "a", "recipient": "b", "body": 2,
                            "client_msg_id": "refused"})
            assert res.status_code == 429 and res.json()["error"] == "overloaded"
            assert int(res.headers["retry-after"]) >= 1
            locker.rollback()
        first.join(30)
        assert results and results[0].status_code == 202
        assert api.stored(str(uuid.uuid5(MESSAGE_NAMESPACE, "a\x00refused"))) == 0
        assert api.post({"sender": "a", "recipient": "b", "body": 2,
                         "client_msg_id": "refused"}).status_code == 202


def test_a_full_queue_answers_503_queue_full_with_retry_after_and_stores_nothing(
    own_pg: tuple[str, Store], key_prefix: str,
) -> None:
    """Flow control: no worker consumes, so the queue grows; past DELIVERY_MAX_BACKLOG the
    API answers 503 ``queue_full`` with ``Retry-After`` and stores nothing; once the queue
    has drained, the same request is accepted."""
    import redis

    with start(own_pg, key_prefix, DELIVERY_MAX_BACKLOG="3") as api:
        for i in range(3):
            res = api.post({"sender": "a", "recipient": "b", "body": i,
                            "client_msg_id": f"q-{i}"})
            assert res.status_code == 202, res.text
        refused = {"sender": "a", "recipient": "b", "body": 3, "client_msg_id": "q-3"}
        res = api.post(refused)
        assert res.status_code == 503, res.text
        assert res.json()["error"] == "queue_full"
        assert "DELIVERY_MAX_BACKLOG" in res.json()["message"]
        assert int(res.headers["retry-after"]) >= 1
        assert api.stored(str(uuid.uuid5(MESSAGE_NAMESPACE, "a\x00q-3"))) == 0
        client = redis.Redis.from_url(REDIS_URL)
        try:
            assert client.llen(f"{key_prefix}:celery:celery") == 3
            client.delete(f"{key_prefix}:celery:celery")  # as if the workers drained it
        finally:
            client.close()
        api.proc.wait_until(lambda: api.post(refused).status_code == 202)
        assert api.stored(str(uuid.uuid5(MESSAGE_NAMESPACE, "a\x00q-3"))) == 1


def test_killed_mid_store_it_answers_nothing_and_the_retry_stores_once(
        own_pg: tuple[str, Store], key_prefix: str) -> None:
    """kill -9 of the API while a send waits on the database: the producer gets no answer
    (so no id), nothing half-made is kept, and its retry to a new process stores once."""
    msg = {"sender": "a", "recipient": "b", "body": 1, "client_msg_id": "killed"}
    msg_id = str(uuid.uuid5(MESSAGE_NAMESPACE, "a\x00killed"))
    with start(own_pg, key_prefix) as api:
        with psycopg.connect(api.db_url) as locker:
            locker.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
            outcome: list[BaseException | httpx.Response] = []

            def send() -> None:
                try:
                    outcome.append(api.post(msg))
                except httpx.HTTPError as exc:
                    outcome.append(exc)

            first = threading.Thread(target=send)
            first.start()
            api.proc.wait_until(lambda: _blocked_backends(api.db_url) > 0)
            api.proc.kill9()
            first.join(30)
            locker.rollback()
        assert len(outcome) == 1 and isinstance(outcome[0], httpx.HTTPError), outcome
        assert api.stored(msg_id) == 0
    with start(own_pg, key_prefix) as again:
        res = again.post(msg)
        assert res.status_code == 202 and res.json()["id"] == msg_id
        assert again.post(msg).json()["id"] == msg_id
        assert again.stored(msg_id) == 1


def test_metrics_count_answers_by_status_under_the_api_role(api: Api) -> None:
    api.post({"sender": "a", "recipient": "b", "body": 1})
    api.post({"sender": "a", "recipient": "b", "body": 1}, key=None)
    text = httpx.get(f"http://127.0.0.1:{api.metrics_port}/metrics", timeout=10).text
    assert 'delivery_process_role{role="api"} 1.0' in text
    assert 'delivery_api_requests_total{status="202"} 1.0' in text
    assert 'delivery_api_requests_total{status="401"} 1.0' in text
    assert "delivery_routing_decisions" not in text and "delivery_gateway_acks" not in text


def test_served_openapi_is_the_documented_one(api: Api) -> None:
    served = api.client.get("/openapi.json").json()
    assert served == yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    assert served["paths"]["/v1/messages"]["post"]["responses"].keys() >= {
        "202", "400", "401", "413", "429", "503"}


def test_refuses_to_start_without_keys(own_pg: tuple[str, Store], key_prefix: str) -> None:
    import subprocess
    import sys

    env = ServiceEnv(own_pg[0], REDIS_URL, key_prefix).env(DELIVERY_API_KEYS="short")
    res = subprocess.run([sys.executable, "-m", "workers.cli", "api", "--port", "0"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "DELIVERY_API_KEYS (key 1)" in res.stderr
    assert res.stderr.count("\n") == 1
    del env["DELIVERY_API_KEYS"]
    res = subprocess.run([sys.executable, "-m", "workers.cli", "api", "--port", "0"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "DELIVERY_API_KEYS is required" in res.stderr
