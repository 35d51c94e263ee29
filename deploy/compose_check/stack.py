"""The compose project of one run: its env file (fresh secrets, loopback ports, the local
images), `up`, waiting for health, scaling, stopping one container, and `down -v`."""

from __future__ import annotations

import json
import re
import resource
import secrets
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from deploy.compose_check import engine
from deploy.compose_check.log import CheckFailed, say

PROJECT = "delivery-check"
# docker-compose.yml's nofile limits (gateway, proxy) and HAProxy's maxconn need more
# descriptors than some hosts let any process have: a container cannot get a hard limit above
# dockerd's without CAP_SYS_RESOURCE. Then this run lowers them to what the host allows.
WANT_NOFILE = {"gateway": 65536, "proxy": 131072}


def host_nofile() -> int:
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[1])
OVERRIDE = engine.ROOT / "deploy" / "compose-check.override.yml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Stack:
    def __init__(self, images: dict[str, str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="compose-check-"))
        self.ws_port, self.wss_port, self.flower_port = free_port(), free_port(), free_port()
        self.flower_auth = f"check:{secrets.token_urlsafe(18)}"
        self.cert = self.dir / "certs" / "delivery.pem"
        made = subprocess.run([str(engine.ROOT / "deploy" / "make-dev-cert"), str(self.cert),
                               "localhost"], capture_output=True, text=True, timeout=120)
        if made.returncode != 0:
            raise CheckFailed(f"deploy/make-dev-cert failed: {made.stderr.strip()[-200:]}")
        limit = host_nofile()
        self.nofile = {svc: min(want, limit) for svc, want in WANT_NOFILE.items()}
        cfg = (engine.ROOT / "deploy" / "haproxy.cfg").read_text()
        if self.nofile["proxy"] < WANT_NOFILE["proxy"]:
            # Two descriptors per proxied connection, and a margin for listeners and checks.
            maxconn = (self.nofile["proxy"] - 1000) // 2
            say(f"host nofile hard limit {limit}: gateway/proxy nofile capped at "
                f"{self.nofile['gateway']}/{self.nofile['proxy']}, HAProxy maxconn {maxconn}")
            cfg = re.sub(r"^(\s*maxconn) \d+", rf"\1 {maxconn}", cfg, count=1, flags=re.M)
        self.haproxy_cfg = self.dir / "haproxy.cfg"
        self.haproxy_cfg.write_text(cfg)
        values = {
            "DELIVERY_SECRET": secrets.token_urlsafe(32),
            "DELIVERY_API_KEYS": secrets.token_urlsafe(32),
            "POSTGRES_PASSWORD": secrets.token_urlsafe(18),
            "RABBITMQ_PASSWORD": secrets.token_urlsafe(18),
            "FLOWER_BASIC_AUTH": self.flower_auth,
            "FLOWER_PORT": str(self.flower_port),
            "DELIVERY_LOG_FORMAT": "json",
            "CHECK_WS_PORT": str(self.ws_port),
            "CHECK_WSS_PORT": str(self.wss_port),
            "CHECK_CERT_DIR": str(self.cert.parent),
            "CHECK_HAPROXY_CFG": str(self.haproxy_cfg),
            "CHECK_GATEWAY_NOFILE": str(self.nofile["gateway"]),
            "CHECK_PROXY_NOFILE": str(self.nofile["proxy"]),
            "CHECK_APP_IMAGE": images["app"],
            "CHECK_REDIS_IMAGE": images["redis"],
            "CHECK_POSTGRES_IMAGE": images["postgres"],
            "CHECK_RABBITMQ_IMAGE": images["rabbitmq"],
            "CHECK_HAPROXY_IMAGE": images["haproxy"],
        }
        self.values = values
        self.extra = self.dir / "extra.override.yml"
        self.env_file = self.dir / "check.env"
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        self.env_file.chmod(0o600)

    @property
    def wss_url(self) -> str:
        return f"wss://localhost:{self.wss_port}/ws"

    def files(self) -> list[str]:
        out = ["-f", str(engine.ROOT / "docker-compose.yml"), "-f", str(OVERRIDE)]
        if self.extra.exists():
            out += ["-f", str(self.extra)]
        return out

    def compose(self, *args: str, check: bool = True, timeout: float = 600,
                stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        return engine.docker("compose", "-p", PROJECT, "--project-directory", str(engine.ROOT),
                             *self.files(), "--env-file", str(self.env_file), *args,
                             check=check, timeout=timeout, stdin=stdin)

    def compose_cmd(self, *args: str) -> list[str]:
        """The argv of a compose command (for streaming its output)."""
        return [engine.docker_bin(), "compose", "-p", PROJECT, "--project-directory",
                str(engine.ROOT), *self.files(), "--env-file", str(self.env_file), *args]

    def write_extra_override(self) -> list[str]:
        """Services docker-compose.yml gained after the static override was written: each one
        built from the Dockerfile runs the project's image, and any port still published beyond
        loopback moves to a free 127.0.0.1 port. Returns what it changed."""
        model = json.loads(self.compose("config", "--format", "json").stdout)
        lines, changed = ["services:"], []
        app = self.values["CHECK_APP_IMAGE"]
        for name, svc in sorted(model["services"].items()):
            body = []
            if "build" in svc and svc.get("image") != app:
                body += [f"    image: {json.dumps(app)}", "    pull_policy: never"]
            ports = svc.get("ports", [])
            if any(p.get("published") and p.get("host_ip") != "127.0.0.1" for p in ports):
                body.append("    ports: !override")
                body += [f'      - "127.0.0.1:{free_port()}:{p["target"]}"' for p in ports]
            if body:
                lines += [f"  {name}:", *body]
                changed.append(name)
        if changed:
            self.extra.write_text("\n".join(lines) + "\n")
        return changed

    def up(self, workers: int, gateways: int) -> None:
        self.compose("up", "-d", "--no-build", "--scale", f"worker={workers}",
                     "--scale", f"gateway={gateways}", timeout=900)

    def containers(self) -> list[dict[str, Any]]:
        res = self.compose("ps", "-a", "--format", "json")
        text = res.stdout.strip()
        if not text:
            return []
        if text.startswith("["):
            rows: list[dict[str, Any]] = json.loads(text)
            return rows
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def wait_healthy(self, services: tuple[str, ...], timeout: float = 600) -> None:
        """Until every running container of `services` reports healthy."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            rows = [r for r in self.containers() if r.get("Service") in services]
            states = {r["Name"]: r.get("Health") or r.get("State") for r in rows}
            bad = {n: s for n, s in states.items() if s != "healthy"}
            summary = ", ".join(f"{n}={s}" for n, s in sorted(bad.items()))
            if rows and not bad:
                return
            if summary != last:
                say(f"waiting for health: {summary}")
                last = summary
            exited = [n for n, s in bad.items() if s in ("exited", "dead")]
            if exited or time.monotonic() > deadline:
                logs = self.compose("logs", "--tail", "15", check=False).stdout[-3000:]
                print(logs)
                raise CheckFailed(f"not healthy: {summary}")
            time.sleep(3)

    def container(self, service: str, index: int) -> str:
        for r in self.containers():
            if r.get("Service") == service and _index(r) == index:
                return str(r["Name"])
        raise CheckFailed(f"no container {service} #{index}")

    def stop_container(self, name: str, grace_s: int = 60) -> None:
        engine.docker("stop", "-t", str(grace_s), name, timeout=grace_s + 60)

    def scale(self, service: str, n: int) -> None:
        self.compose("up", "-d", "--no-build", "--no-deps", "--no-recreate",
                     "--scale", f"{service}={n}", service, timeout=300)

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False,
                     timeout=600)

    @staticmethod
    def down_project() -> None:
        """`down -v` for whatever an earlier (interrupted or --keep) run left: the env file only
        has to satisfy the compose file's required variables."""
        with tempfile.TemporaryDirectory(prefix="compose-check-down-") as tmp:
            env_file = Path(tmp) / "down.env"
            env_file.write_text("".join(f"{k}=x\n" for k in (
                "DELIVERY_SECRET", "DELIVERY_API_KEYS", "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD",
                "FLOWER_BASIC_AUTH", "CHECK_WS_PORT", "CHECK_WSS_PORT", "CHECK_CERT_DIR",
                "CHECK_APP_IMAGE", "CHECK_HAPROXY_CFG", "CHECK_GATEWAY_NOFILE",
                "CHECK_PROXY_NOFILE",
                "CHECK_REDIS_IMAGE", "CHECK_POSTGRES_IMAGE", "CHECK_RABBITMQ_IMAGE",
                "CHECK_HAPROXY_IMAGE")))
            engine.docker("compose", "-p", PROJECT, "--project-directory", str(engine.ROOT),
                          "-f", str(engine.ROOT / "docker-compose.yml"), "-f", str(OVERRIDE),
                          "--env-file", str(env_file), "down", "-v", "--remove-orphans",
                          "--timeout", "20", check=False, timeout=600)

    def logs_tail(self, lines: int = 40) -> str:
        return self.compose("logs", "--no-color", "--tail", str(lines), check=False).stdout


def _index(row: dict[str, Any]) -> int:
    labels = row.get("Labels", "")
    for part in labels.split(","):
        key, _, value = part.partition("=")
        if key == "com.docker.compose.container-number":
            return int(value)
    return -1
