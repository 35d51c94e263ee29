"""deploy/compose-check: the compose stack built without a registry and run for real.

The full run (dockerd, debootstrapped images, 3 workers + 2 gateways, 1,000 messages through
HAProxy with a worker stopped and the gateways scaled down) takes 4-8 minutes, so it runs when
DELIVERY_TEST_COMPOSE=1 (.ci/run sets it) and skips with the reason otherwise, or when dockerd
cannot run on the machine (the line compose-check printed says why). The override file is
checked against docker-compose.yml by Compose's own parser every time (no engine needed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.compose_check import engine, images
from deploy.compose_check.log import CheckFailed
from deploy.compose_check.stack import Stack
from tests.ops.test_compose import compose, run  # noqa: F401  (compose is a fixture)

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "deploy" / "compose-check"
OVERRIDE = ROOT / "deploy" / "compose-check.override.yml"
# What compose-check could not do on this machine: a reason to skip, not a failure.
CANNOT_RUN = ("dockerd cannot run here", "needs root", "no `docker` client")


def test_override_maps_every_public_image_to_a_local_one(compose: list[str],  # noqa: F811
                                                         tmp_path: Path) -> None:
    env = tmp_path / "check.env"
    values = {"DELIVERY_SECRET": "s" * 40, "DELIVERY_API_KEYS": "k" * 40,
              "POSTGRES_PASSWORD": "p", "RABBITMQ_PASSWORD": "r",
              "FLOWER_BASIC_AUTH": "a:b", "CHECK_WS_PORT": "18080", "CHECK_WSS_PORT": "18443",
              "CHECK_CERT_DIR": str(tmp_path), "CHECK_HAPROXY_CFG": str(tmp_path / "h.cfg"),
              "CHECK_GATEWAY_NOFILE": "20000", "CHECK_PROXY_NOFILE": "20000",
              **{f"CHECK_{n.upper()}_IMAGE": f"delivery-check/{n}:k"
                 for n in ("app", "redis", "postgres", "rabbitmq", "haproxy")}}
    env.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    cmd = [*compose, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"),
           "-f", str(OVERRIDE), "--env-file", str(env), "config", "--format", "json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={k: v for k, v in os.environ.items()
                              if not k.startswith(("DELIVERY_", "CHECK_"))})
    assert res.returncode == 0, res.stderr
    services = json.loads(res.stdout)["services"]
    for name, svc in services.items():
        assert svc["image"].startswith("delivery-check/"), f"{name} still uses {svc['image']}"
        assert svc.get("pull_policy") == "never", name
    proxy = services["proxy"]
    assert {p["host_ip"] for p in proxy["ports"]} == {"127.0.0.1"}
    assert {p["host_ip"] for p in services["flower"]["ports"]} == {"127.0.0.1"}
    assert proxy["ulimits"]["nofile"] == {"soft": 20000, "hard": 20000}
    assert services["gateway"]["ulimits"]["nofile"]["hard"] == 20000
    hc = services["gateway"]["healthcheck"]  # only the timing relaxed, the same check
    assert hc["start_period"] == "3m0s" and "/healthz" in " ".join(hc["test"])


def test_services_added_later_are_mapped_too(compose: list[str],  # noqa: F811
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A service another change adds to docker-compose.yml (built from the Dockerfile, a port on
    every interface) runs the project's image and is published on loopback only."""
    if shutil.which("docker") is None:
        pytest.skip("no docker client (the compose plugin runs through it)")
    local = {n: f"delivery-check/{n}:k" for n in ("app", "redis", "postgres", "rabbitmq",
                                                   "haproxy")}
    stack = Stack(local)
    assert stack.write_extra_override() == []  # today's file: the static override covers it
    added = tmp_path / "added.yml"
    added.write_text("services:\n  api:\n    build: .\n    image: delivery:local\n"
                     "    command: [delivery, api]\n    ports: ['8000:8000']\n")
    files = stack.files
    monkeypatch.setattr(stack, "files", lambda: [*files()[:4], "-f", str(added),
                                                 *files()[4:]])
    assert stack.write_extra_override() == ["api"]
    api = json.loads(stack.compose("config", "--format", "json").stdout)["services"]["api"]
    assert api["image"] == local["app"] and api["pull_policy"] == "never"
    assert [(p["host_ip"], p["target"]) for p in api["ports"]] == [("127.0.0.1", 8000)]
    shutil.rmtree(stack.dir)


def test_a_dockerd_that_cannot_start_is_reported_with_each_attempts_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """overlay2, then vfs, then vfs without iptables; the error quotes each fatal line."""
    if os.geteuid() != 0:
        pytest.skip("starting dockerd needs root")
    fake = tmp_path / "dockerd"
    fake.write_text('#!/bin/sh\necho "level=fatal msg=\\"no luck with $*\\""\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setattr(engine, "answers", lambda: False)
    monkeypatch.setattr("deploy.compose_check.engine.shutil.which", lambda name: str(fake))
    monkeypatch.setattr(engine, "DOCKERD_LOG", tmp_path / "dockerd.log")
    with pytest.raises(CheckFailed) as err:
        engine.Daemon().ensure()
    msg = str(err.value)
    assert msg.startswith("dockerd cannot run here")
    assert "no luck with --storage-driver=overlay2" in msg
    assert "no luck with --storage-driver=vfs --iptables=false" in msg


def test_the_debian_mirror_is_the_one_apt_uses() -> None:
    mirror = images.debian_mirror()
    assert mirror.startswith(("http://", "https://")) and "security" not in mirror


@pytest.mark.timeout(2400)
def test_compose_stack_runs_for_real(tmp_path: Path) -> None:
    if os.environ.get("DELIVERY_TEST_COMPOSE") != "1":
        pytest.skip("the compose run takes 4-8 minutes: DELIVERY_TEST_COMPOSE=1 runs it "
                    "(.ci/run sets it)")
    log = tmp_path / "compose-check.log"
    with log.open("w") as err:
        res = subprocess.run([str(CHECK), "--json"], stdout=subprocess.PIPE, stderr=err,
                             text=True, timeout=2300, cwd=ROOT)
    lines = log.read_text().splitlines()
    print("\n".join(lines[-60:]))
    if res.returncode == 2:
        reason = next((ln for ln in reversed(lines) if any(c in ln for c in CANNOT_RUN)), None)
        if reason is not None:
            pytest.skip(f"compose-check cannot run here: {reason}")
    assert res.returncode == 0, "\n".join(lines[-40:])
    s = json.loads(res.stdout)
    assert s["sent"] == 1000 and s["received"] == 1000 and s["lost"] == 0
    assert s["store_by_state"]["delivered"] == 1000
    assert len(s["flower_workers"]) == 3  # Flower showed the three workers
    assert len(s["status_workers"]) == 2 and s["status_exit"] == 0  # one stopped
    assert len(s["events"]) == 2  # the worker stop and the gateway scale-down happened mid-run
