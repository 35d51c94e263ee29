"""A real worker started with ``delivery worker``: its /metrics move, ``delivery status`` sees it,
its routing lines are structured with the message id."""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from collections.abc import Iterator

import pytest

from delivery.celery_app import make_app
from delivery.settings import Settings
from delivery.store import Store
from workers.devkit.procs import Proc, delivery_cmd, free_port
from workers.devkit.services import ServiceEnv

pytestmark = pytest.mark.slow


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@pytest.fixture
def worker(services: ServiceEnv, pg_store: Store) -> Iterator[tuple[Proc, int, dict[str, str]]]:
    # pg_store empties the run's database: the counts below are this test's messages only.
    port = free_port()
    # Short timeouts: offline recipients go to push (no device: pending) within a second.
    env = services.env(DELIVERY_METRICS_PORT=str(port), DELIVERY_OFFLINE_GRACE_S="0.05",
                       DELIVERY_SWEEP_INTERVAL_S="0.2")
    proc = delivery_cmd("delivery-worker", ["worker", "-c", "4", "-n", "ops1@%h",
                                            "--without-gossip", "--without-mingle"], env)
    try:
        proc.wait_for_log("ready.", timeout=60)
        yield proc, port, env
    finally:
        proc.stop()


def test_worker_metrics_status_and_logs(worker: tuple[Proc, int, dict[str, str]]) -> None:
    proc, port, env = worker
    # delivery worker ran celery with our defaults
    assert "threads" in proc.log().lower() or "thread" in proc.log().lower()
    before = scrape(port)
    assert before['delivery_messages_total{outcome="expired"}'] == 0
    assert before["delivery_presence_synced"] == 1

    app = make_app(Settings.from_env(env))
    n = 4
    try:
        for i in range(n):
            # Offline recipient: wait (offline grace), then push.
            app.send_task("delivery.send", kwargs={
                "sender": "alice", "recipient": f"offline-{i}", "body": {"text": f"m{i}"}})
            # A TTL shorter than the offline grace: expired at the re-check.
            app.send_task("delivery.send", kwargs={
                "sender": "alice", "recipient": f"gone-{i}", "body": {"text": f"e{i}"},
                "ttl_s": 0.01})
    finally:
        app.close()

    def moved() -> bool:
        m = scrape(port)
        return (m.get('delivery_messages_total{outcome="expired"}', 0) >= n
                and m.get('delivery_routing_decisions_total{decision="push",trigger="recheck"}',
                          0) >= n)

    proc.wait_until(moved, timeout=30)
    after = scrape(port)
    assert after['delivery_routing_decisions_total{decision="wait",trigger="new"}'] >= 2 * n
    assert after['delivery_routing_decisions_total{decision="expire",trigger="recheck"}'] >= n
    # A worker exports its role and none of the gateway-only families.
    assert after['delivery_process_role{role="worker"}'] == 1
    assert not any(k.startswith(("delivery_gateway_", "delivery_ack_latency")) for k in after)
    assert after['delivery_presence_replicas{status="up"}'] >= 0
    assert after["delivery_oldest_in_flight_age_seconds"] >= 0
    assert after["delivery_oldest_unacked_age_seconds"] >= 0

    # delivery status: the worker answers, its replica is up, messages are counted by state.
    status = delivery_cmd("status", ["status", "--json"], env)
    assert status.popen.wait(30) == 0, status.log()
    out = status.log()
    summary = json.loads(out[out.index("{"):])
    names = [w["name"] for w in summary["workers"]["workers"]]
    assert [w["pool"] for w in summary["workers"]["workers"]] == ["thread"]
    assert any(name.startswith("ops1@") for name in names), summary
    assert summary["presence"]["synced"] is True
    replicas = summary["presence"]["replicas"]
    assert any(r["role"] == "worker" and r["status"] == "up" for r in replicas), replicas
    by_state = summary["messages"]["by_state"]
    assert by_state["expired"] == n
    assert summary["messages"]["total"] == 2 * n
    assert summary["messages"]["oldest_unacked_age_s"] is not None  # expired is unacked

    text = delivery_cmd("status-text", ["status"], env)
    assert text.popen.wait(30) == 0, text.log()
    screen = text.log()
    assert "workers: 1 answering" in screen and f"expired={n}" in screen
    assert "oldest unacked" in screen

    # Structured lines from our loggers, with the message id; Celery's lines in the same format.
    log = proc.log()
    lines = [ln for ln in log.splitlines() if "logger=delivery.routing" in ln]
    assert lines, log[-3000:]
    assert all(re.search(r"\bmessage_id=[0-9a-f-]{36}\b", ln) for ln in lines
               if "message " in ln), lines
    ready = re.compile(r'^ts=\S+ level=info logger=celery\.\S+ event="[^"]*ready\."', re.M)
    assert ready.search(log), log[-3000:]


def test_status_embedded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
    env["DELIVERY_DATA_DIR"] = str(tmp_path)
    mig = delivery_cmd("migrate", ["migrate"], env)
    assert mig.popen.wait(60) == 0, mig.log()
    status = delivery_cmd("status", ["status", "--json"], env)
    assert status.popen.wait(30) == 0, status.log()
    out = status.log()
    summary = json.loads(out[out.index("{"):])
    assert summary["mode"] == "embedded"
    assert summary["messages"]["total"] == 0
    assert "workers" not in summary


def test_worker_dry_run_passes_options_through() -> None:
    from workers.commands.worker import build_command

    cmd, dry = build_command(["-c", "3", "-n", "a@%h", "--without-mingle", "--dry-run"])
    assert dry
    assert cmd[:7] == [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-E"]
    assert cmd[cmd.index("--pool") + 1] == "threads"
    assert cmd[cmd.index("--concurrency") + 1] == "3"
    assert cmd[-3:] == ["-n", "a@%h", "--without-mingle"]


def test_gateway_snapshot_feeds_counters() -> None:
    from delivery import metrics

    metrics.update_gateway({"connections": 3, "frames_sent": 10, "acks": 4, "nacks": 1,
                            "replayed": 2})
    base = metrics.GATEWAY_FRAMES_SENT._value.get()
    metrics.update_gateway({"connections": 1, "frames_sent": 15, "acks": 4})
    assert metrics.GATEWAY_FRAMES_SENT._value.get() == base + 5
    assert metrics.GATEWAY_CONNECTIONS._value.get() == 1


def test_age_gauges() -> None:
    from datetime import UTC, datetime, timedelta

    from delivery import metrics

    now = datetime.now(UTC)
    metrics.update_ages(now - timedelta(seconds=5), (now - timedelta(hours=1)).replace(
        tzinfo=None), now=now)
    assert metrics.OLDEST_IN_FLIGHT_AGE._value.get() == pytest.approx(5)
    assert metrics.OLDEST_UNACKED_AGE._value.get() == pytest.approx(3600)
    metrics.update_ages(None, None, now=now)
    assert metrics.OLDEST_IN_FLIGHT_AGE._value.get() == 0


def test_push_results_feed_outcomes() -> None:
    from types import SimpleNamespace

    from delivery import metrics
    from workers.metrics_wiring import _on_task_postrun

    def value(outcome: str) -> float:
        return float(metrics.MESSAGES.labels(outcome)._value.get())

    pushed, pending = value("pushed"), value("pending")
    count = metrics.ATTEMPTS._sum.get()
    task = SimpleNamespace(name="delivery.push")
    _on_task_postrun(task=task, retval="pushed", kwargs={"message_id": "x", "attempt": 3},
                     state="SUCCESS")
    _on_task_postrun(task=task, retval="no_device", kwargs={"attempt": 1}, state="SUCCESS")
    _on_task_postrun(task=task, retval="skipped", kwargs={"attempt": 1}, state="SUCCESS")
    assert value("pushed") == pushed + 1 and value("pending") == pending + 1
    assert metrics.ATTEMPTS._sum.get() == count + 4
    assert metrics.PUSHES.labels("skipped")._value.get() >= 1
