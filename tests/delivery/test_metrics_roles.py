"""Each role exports only its own families (so alerts see a missing worker as absent series),
and the replica-downs counter keeps counting after a dead replica is purged."""

from __future__ import annotations

import urllib.request

from prometheus_client import generate_latest

from delivery import metrics
from workers.devkit.procs import free_port


def families(role: str) -> set[str]:
    text = generate_latest(metrics.role_registry(role)).decode()
    names = (line.split()[2] for line in text.splitlines() if line.startswith("# TYPE "))
    return {n.removesuffix("_total") for n in names}


def test_gateway_does_not_export_worker_gauges() -> None:
    gateway, worker, both = families("gateway"), families("worker"), families("all")
    assert not gateway & metrics.WORKER_ONLY
    assert not worker & metrics.GATEWAY_ONLY
    assert worker >= metrics.WORKER_ONLY and gateway >= metrics.GATEWAY_ONLY
    assert both >= metrics.WORKER_ONLY | metrics.GATEWAY_ONLY
    assert {"delivery_process_role", "delivery_messages", "delivery_presence_synced",
            "delivery_presence_replica_downs"} <= gateway & worker


def test_role_label_is_exported() -> None:
    text = generate_latest(metrics.role_registry("gateway")).decode()
    assert 'delivery_process_role{role="gateway"} 1.0' in text


def test_served_registry_is_the_roles(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(metrics, "_server_port", None)
    port = free_port()
    assert metrics.start_metrics_server(port, addr="127.0.0.1", role="worker") == port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'delivery_process_role{role="worker"} 1.0' in text
    assert "delivery_gateway_connections" not in text


def test_replica_downs_count_each_replica_once() -> None:
    before = metrics.PRESENCE_REPLICA_DOWNS._value.get()
    metrics.update_presence({"replicas_up": ["a:1", "b:1"], "replicas_down": []})
    metrics.update_presence({"replicas_up": ["b:1"], "replicas_down": ["a:1"]})
    metrics.update_presence({"replicas_up": ["b:1"], "replicas_down": ["a:1"]})  # still down
    metrics.update_presence({"replicas_up": ["b:1"], "replicas_down": []})  # a purged
    assert metrics.PRESENCE_REPLICA_DOWNS._value.get() == before + 1
    metrics.update_presence({"replicas_up": [], "replicas_down": ["b:1"]})
    assert metrics.PRESENCE_REPLICA_DOWNS._value.get() == before + 2
