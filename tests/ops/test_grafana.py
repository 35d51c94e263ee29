"""deploy/grafana/delivery.json is a well-formed Grafana dashboard whose every query parses as
PromQL (promtool, when installed) and names only metrics we export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.test_alerts import exported_series

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "delivery.json"
PANEL_TYPES = {"timeseries", "stat", "gauge", "table", "bargauge", "text"}


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def test_dashboard_is_well_formed() -> None:
    doc = dashboard()
    assert doc["uid"] and doc["title"] and isinstance(doc["schemaVersion"], int)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for p in doc["panels"]:
        assert p["type"] in PANEL_TYPES and p["title"], p
        grid = p["gridPos"]
        assert {"x", "y", "w", "h"} <= set(grid) and grid["x"] + grid["w"] <= 24, p["title"]
        assert p["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
    variables = {v["name"] for v in doc["templating"]["list"]}
    assert "datasource" in variables


def test_dashboard_covers_what_operators_watch() -> None:
    text = " ".join(exprs())
    for metric in ("delivery_messages_total", "delivery_ack_latency_seconds_bucket",
                   "delivery_oldest_in_flight_age_seconds", "delivery_presence_synced",
                   "delivery_presence_replica_downs_total", "delivery_pushes_total"):
        assert metric in text, metric


def test_every_query_names_exported_metrics() -> None:
    exported = exported_series()
    for expr in exprs():
        used = set(re.findall(r"\bdelivery_[a-z_]+", expr))
        assert used and used <= exported, (expr, used - exported)


def test_every_query_parses(tmp_path: Path) -> None:
    tool = shutil.which("promtool")
    if tool is None:
        reason = "promtool not installed (apt-get install prometheus; .ci/run installs it)"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    rules = [{"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs())]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
