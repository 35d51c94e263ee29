"""Flower against a real worker: every task under its stable name, message bodies redacted, the
API closed without the basic-auth credentials, read-only (no task execution, no worker control),
and never started behind the placeholder password."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from delivery.celery_app import make_app
from delivery.settings import Settings
from tests.ops.test_metrics_status import free_port
from workers.devkit.procs import Proc, celery_worker
from workers.devkit.services import REDIS_URL, ServiceEnv

pytestmark = pytest.mark.slow

USER, PASSWORD = "ops", "s3cret-pw-4f9c1e"


def get(url: str, auth: bool = True, data: bytes | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=data)
    if auth:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@dataclass
class FlowerCluster:
    env: dict[str, str]
    port: int
    flower: Proc

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def tasks(self) -> dict[str, Any]:
        status, text = get(self.url("/api/tasks"))
        assert status == 200, text
        tasks: dict[str, Any] = json.loads(text)
        return tasks

    def send(self, text: str, n: int, **options: Any) -> list[str]:
        app = make_app(Settings.from_env(self.env))
        try:
            return [app.send_task("delivery.send", kwargs={
                "sender": "alice", "recipient": f"bob-{i}", "body": {"text": f"{text} #{i}"}},
                **options).id for i in range(n)]
        finally:
            app.close()


@pytest.fixture(scope="module")
def cluster(pg_url: str, run_prefix: str) -> Iterator[FlowerCluster]:
    services = ServiceEnv(database_url=pg_url, redis_url=REDIS_URL,
                          key_prefix=f"{run_prefix}:{uuid.uuid4().hex[:6]}")
    env = services.env()
    port = free_port()
    worker = celery_worker(env, "fl1", concurrency=2)
    flower = flower_proc(env, port)
    try:
        flower.wait_until(lambda: _answers(port), timeout=60)
        time.sleep(1.0)  # let Flower's event receiver attach before tasks run
        yield FlowerCluster(env, port, flower)
    finally:
        flower.stop()
        worker.stop()


def flower_proc(env: dict[str, str], port: int, auth: str = f"{USER}:{PASSWORD}") -> Proc:
    """Flower as deployed: through ``delivery flower`` (read-only routes, password checked)."""
    return Proc("flower", [
        sys.executable, "-m", "workers.cli", "flower", f"--port={port}", "--address=127.0.0.1",
        f"--basic-auth={auth}",
    ], env)


def _answers(port: int) -> bool:
    try:
        return get(f"http://127.0.0.1:{port}/healthcheck", auth=False)[0] == 200
    except OSError:
        return False


def test_flower_shows_tasks_by_name_with_bodies_redacted(cluster: FlowerCluster) -> None:
    secret = f"top-secret-{uuid.uuid4().hex}"
    ids = cluster.send(secret, 3)
    cluster.flower.wait_until(lambda: all(
        cluster.tasks().get(i, {}).get("state") == "SUCCESS" for i in ids), timeout=30)
    tasks = cluster.tasks()
    assert {tasks[i]["name"] for i in ids} == {"delivery.send"}
    assert all("<redacted>" in str(tasks[i]["kwargs"]) for i in ids), [tasks[i] for i in ids]
    # The routing tasks the sends led to show under their stable names too.
    assert {"delivery.send", "delivery.route"} <= {t["name"] for t in tasks.values()}

    # The body appears nowhere in what Flower answers: task list, details, types, the web page.
    for path in ["/api/tasks", *[f"/api/task/info/{i}" for i in ids], "/api/task/types",
                 "/tasks"]:
        status, text = get(cluster.url(path))
        assert status == 200, (path, text[:300])
        assert secret not in text, path

    # Basic auth is enforced, on the API and the pages.
    assert get(cluster.url("/api/tasks"), auth=False)[0] == 401
    assert get(cluster.url("/"), auth=False)[0] == 401


def test_flower_task_known_only_from_its_sent_event_is_redacted(cluster: FlowerCluster) -> None:
    secret = f"top-secret-{uuid.uuid4().hex}"
    # No worker consumes this queue: Flower knows the task from the sender's task-sent event.
    [task_id] = cluster.send(secret, 1, queue=f"nobody-{uuid.uuid4().hex[:6]}")
    cluster.flower.wait_until(lambda: task_id in cluster.tasks(), timeout=15)
    assert cluster.tasks()[task_id]["name"] == "delivery.send"
    for path in ["/api/tasks", f"/api/task/info/{task_id}"]:
        status, text = get(cluster.url(path))
        assert status == 200
        assert secret not in text, path


def test_flower_cannot_run_tasks_or_control_workers(cluster: FlowerCluster) -> None:
    # The fault: with the password, POST /api/task/async-apply/delivery.send stored a message
    # "from" anyone. The launcher removes every route that is not read-only.
    secret = f"spoofed-{uuid.uuid4().hex}"
    payload = json.dumps({"kwargs": {"sender": "ceo", "recipient": "victim",
                                     "body": {"text": secret}}}).encode()
    for path in ["/api/task/async-apply/delivery.send", "/api/task/apply/delivery.send",
                 "/api/task/send-task/delivery.send",
                 "/api/task/async-apply/delivery.register_device",
                 "/api/worker/shutdown/fl1@localhost", "/api/worker/pool/grow/fl1@localhost",
                 "/api/task/revoke/x", "/api/task/rate-limit/delivery.send"]:
        status, text = get(cluster.url(path), data=payload)
        assert status in (403, 404, 405), (path, status, text[:200])
    # Monitoring still works.
    assert get(cluster.url("/api/tasks"))[0] == 200
    assert get(cluster.url("/api/workers"))[0] == 200
    # Nothing was run: Flower saw no task carrying the spoofed body, the worker ran none.
    time.sleep(1.0)
    assert secret not in get(cluster.url("/api/tasks"))[1]
    assert cluster.flower.popen.poll() is None


@pytest.mark.parametrize("auth", ["admin:CHANGE-ME-flower-password", "admin:short", ""])
def test_flower_refuses_to_start_with_a_placeholder_or_weak_password(auth: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    proc = flower_proc(env, free_port(), auth=auth)
    try:
        assert proc.popen.wait(60) == 2
        assert "delivery flower:" in proc.log()
    finally:
        proc.stop()


def test_the_env_example_flower_password_is_refused() -> None:
    from tests.ops.test_compose import env_example
    from workers.flower import check_basic_auth

    assert check_basic_auth(env_example()["FLOWER_BASIC_AUTH"]) is not None
    assert check_basic_auth(f"{USER}:{PASSWORD}") is None
