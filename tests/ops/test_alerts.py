"""The alert rules in deploy/prometheus/ load and behave as their unit tests say (promtool),
and every metric they name is one we export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from delivery import metrics

PROM = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        reason = "promtool not installed (apt-get install prometheus; .ci/run installs it)"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    return tool


def test_rules_load() -> None:
    out = subprocess.run([promtool(), "check", "rules", str(PROM / "alerts.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_rules_unit_tests() -> None:
    out = subprocess.run([promtool(), "test", "rules", "alerts_test.yml"], cwd=PROM,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def exported_series() -> set[str]:
    """Every series name the processes of any role can export (also families with labels
    that have no sample yet)."""
    text = generate_latest(metrics.role_registry("all")).decode()
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    suffixes = ("", "_total", "_bucket", "_count", "_sum")
    return {f.removesuffix("_total") + s for f in families for s in suffixes}


def test_every_alert_names_exported_metrics() -> None:
    exported = exported_series()
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"][0]["rules"]
    names = {r["alert"] for r in rules}
    assert {"DeliveryNoWorkers", "DeliveryMessagesStuck", "DeliveryReplicasDown",
            "DeliveryPushFailures", "DeliveryAckLatencyHigh"} <= names
    for rule in rules:
        used = set(re.findall(r"\bdelivery_[a-z_]+", rule["expr"]))
        assert used and used <= exported, (rule["alert"], used - exported)
