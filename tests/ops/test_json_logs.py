"""``DELIVERY_LOG_FORMAT=json``: the gateway's lines and a worker's lines — ours and Celery's —
are one JSON object each (Celery's start-up banner aside, which it prints, not logs). The gateway
process also serves only its role's metrics."""

from __future__ import annotations

import json
import re
import signal
import urllib.request

import pytest

from workers.devkit.procs import celery_worker, delivery_cmd, free_port
from workers.devkit.services import ServiceEnv

pytestmark = pytest.mark.slow

CELERY_FORMAT = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+: [A-Z]+/")


def records(log: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def test_gateway_logs_json(services: ServiceEnv) -> None:
    port = free_port()
    env = services.env(DELIVERY_LOG_FORMAT="json", DELIVERY_METRICS_PORT=str(port))
    proc = delivery_cmd("gw-json", ["gateway", "--node", "gw-json", "--port", "0"], env)
    try:
        proc.wait_for_log("gateway gw-json listening on ws://", timeout=60)
        url = f"http://127.0.0.1:{port}/metrics"
        metrics = urllib.request.urlopen(url, timeout=10).read().decode()
        assert 'delivery_process_role{role="gateway"} 1.0' in metrics
        assert "delivery_gateway_connections" in metrics
        for worker_only in ("delivery_oldest_in_flight_age_seconds", "delivery_pushes_total",
                            "delivery_routing_decisions"):
            assert worker_only not in metrics, worker_only
    finally:
        proc.stop(signal.SIGTERM)
    lines = [ln for ln in proc.log().splitlines() if ln.strip()]
    assert lines and all(ln.startswith("{") for ln in lines), lines
    found = records(proc.log())
    assert {"ts", "level", "logger", "event"} <= set(found[0])
    assert any(r["logger"] == "delivery.gateway" and "stopped" in str(r["event"])
               for r in found), found


def test_worker_logs_ours_and_celerys_as_json(services: ServiceEnv) -> None:
    proc = celery_worker(services.env(DELIVERY_LOG_FORMAT="json"), "jsonlog", concurrency=1)
    try:
        log = proc.log()
    finally:
        proc.stop()
    found = records(log)
    loggers = {str(r["logger"]) for r in found}
    assert any(name.startswith("celery.") for name in loggers), loggers
    assert any(name.startswith("delivery.") for name in loggers), loggers
    assert any(str(r["event"]).endswith("ready.") for r in found)
    assert not [ln for ln in log.splitlines() if CELERY_FORMAT.match(ln)]
