"""The quick soak: ``delivery soak`` as an operator runs it, with one of each fast fault during
steady traffic (private Redis, this run's database, a private RabbitMQ vhost when the broker
answers). Nothing may be lost, shown twice or left in a non-final state."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.soak.report import text
from workers.devkit.procs import ROOT
from workers.devkit.services import AMQP_URL, PG_ADMIN_URL, rabbitmq_answers

pytestmark = pytest.mark.slow

QUICK = ["--messages", "1500", "--rate", "20", "--clients", "16", "--faults", "fast",
         "--quiet", "5", "--settle", "40", "--json"]


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_quick_soak_loses_nothing(broker: str) -> None:
    if broker == "rabbitmq" and not rabbitmq_answers(AMQP_URL):
        pytest.skip("RabbitMQ does not answer on 127.0.0.1:5672")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", "soak", "--broker", broker,
         "--pg-url", PG_ADMIN_URL, *QUICK],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.stdout.strip(), f"no report (exit {done.returncode}):\n{done.stderr[-4000:]}"
    report = json.loads(done.stdout)
    assert sum(report["faults"].values()) >= 6, report["by_fault"]
    verdict = (report["lost"], report["shown_twice"], report["not_final"])
    losses = [(d["fault"], d["lost"], [(i["id"], i["state"]) for i in d["ids"][:3]])
              for d in report["loss_details"]]
    assert verdict == (0, 0, 0), (
        f"{text(report)}\nloss by fault (first ids): {losses}\n"
        f"shown twice: {report['shown_twice_ids'][:3]}\nnot final: {report['not_final_ids'][:3]}")
    assert done.returncode == 0
