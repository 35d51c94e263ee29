import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from delivery.secret import PUBLISHED, WeakSecret, check_secret, new_secret
from delivery.settings import Settings, SettingsError
from workers.devkit.procs import ROOT

STRONG = new_secret()


def test_embedded_default_needs_nothing(tmp_path: Path) -> None:
    s = Settings.from_env({"DELIVERY_DATA_DIR": str(tmp_path)})
    assert s.embedded
    assert s.effective_database_url.startswith("sqlite:///")
    assert s.effective_broker_url.startswith("memory://")
    assert s.effective_secret


def test_values_are_read_and_typed() -> None:
    s = Settings.from_env({
        "DELIVERY_ACK_TIMEOUT_S": "1.5", "DELIVERY_MAX_ATTEMPTS": "5",
        "DELIVERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        "DELIVERY_REDIS_URL": "redis://127.0.0.1:6379/0", "DELIVERY_SECRET": STRONG,
    })
    assert s.ack_timeout_s == 1.5 and s.max_attempts == 5 and not s.embedded


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"DELIVERY_ACK_TIMEOUT_S": "-1"}, "DELIVERY_ACK_TIMEOUT_S"),
        ({"DELIVERY_ACK_TIMEOUT_S": "soon"}, "DELIVERY_ACK_TIMEOUT_S"),
        ({"DELIVERY_MAX_ATTEMPTS": "0"}, "DELIVERY_MAX_ATTEMPTS"),
        ({"DELIVERY_MAX_CONNECTIONS_PER_USER": "0"}, "DELIVERY_MAX_CONNECTIONS_PER_USER"),
        ({"DELIVERY_DATABASE_URL": "not a url"}, "DELIVERY_DATABASE_URL"),
        ({"DELIVERY_REDIS_URL": "redis://:99999999"}, "DELIVERY_REDIS_URL"),
        ({"DELIVERY_ENV": "production"}, "DELIVERY_SECRET"),
        ({"DELIVERY_ENV": "staging"}, "DELIVERY_ENV"),
        ({"DELIVERY_BROKER_URL": "redis://127.0.0.1:6379/0"}, "DELIVERY_REDIS_URL"),
        ({"DELIVERY_PRESENCE_DOWN_S": "0.3"}, "DELIVERY_PRESENCE_DOWN_S"),
        ({"DELIVERY_MAX_BODY_DEPTH": "0"}, "DELIVERY_MAX_BODY_DEPTH"),
        ({"DELIVERY_MAX_BODY_DEPTH": "5000"}, "DELIVERY_MAX_BODY_DEPTH"),
        ({"DELIVERY_TOKEN_TTL_S": "inf"}, "DELIVERY_TOKEN_TTL_S"),
        (
            {"DELIVERY_ENV": "production", "DELIVERY_SECRET": STRONG},
            "DELIVERY_DATABASE_URL",
        ),
    ],
)
def test_bad_values_stop_startup_naming_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)


# -- finding 1: no well-known secret ------------------------------------------------------------

SHARED = [
    {"DELIVERY_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/x"},
    {"DELIVERY_BROKER_URL": "redis://127.0.0.1:6379/0",
     "DELIVERY_REDIS_URL": "redis://127.0.0.1:6379/0"},
    {"DELIVERY_REDIS_URL": "redis://127.0.0.1:6379/0"},
]


@pytest.mark.parametrize("env", SHARED)
def test_shared_services_require_an_explicit_secret(env: dict[str, str]) -> None:
    """Fault: a cluster started without DELIVERY_ENV used to sign with a built-in secret."""
    with pytest.raises(SettingsError, match="DELIVERY_SECRET is required"):
        Settings.from_env(env)
    with pytest.raises(SettingsError, match="DELIVERY_SECRET"):
        _ = Settings(**{k.removeprefix("DELIVERY_").lower(): v  # type: ignore[arg-type]
                        for k, v in env.items()}).effective_secret
    assert Settings.from_env({**env, "DELIVERY_SECRET": STRONG}).effective_secret == STRONG


def test_embedded_default_makes_a_private_secret_per_data_dir(tmp_path: Path) -> None:
    a = Settings.from_env({"DELIVERY_DATA_DIR": str(tmp_path / "a")})
    b = Settings.from_env({"DELIVERY_DATA_DIR": str(tmp_path / "b")})
    secret_a = a.effective_secret
    check_secret(secret_a)
    assert secret_a != b.effective_secret
    f = tmp_path / "a" / "secret"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert f.read_text().strip() == secret_a
    # Another process on the same data dir (``delivery token`` next to ``delivery up``) agrees.
    out = subprocess.run(
        [sys.executable, "-c", "from delivery.settings import get_settings; "
         "print(get_settings().effective_secret)"],
        env={**_clean_env(), "DELIVERY_DATA_DIR": str(tmp_path / "a")}, cwd=ROOT,
        capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == secret_a
    assert "dev-insecure-secret" in PUBLISHED and secret_a not in PUBLISHED


def test_a_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    s = Settings(data_dir=str(tmp_path / "c"))
    _ = s.effective_secret
    (tmp_path / "c" / "secret").chmod(0o644)
    from delivery import secret as mod

    mod._cache.clear()
    with pytest.raises(WeakSecret, match="readable by others"):
        _ = s.effective_secret


def _published_examples() -> set[str]:
    """Every DELIVERY_SECRET value written in the README, docs, .env.example and compose."""
    found: set[str] = set()
    files = [ROOT / "README.md", ROOT / ".env.example", ROOT / "docker-compose.yml",
             *sorted((ROOT / "docs").glob("*.md"))]
    for f in files:
        for m in re.finditer(r"DELIVERY_SECRET[=:]\s*['\"]?([^\s'\"`$|]+)", f.read_text()):
            found.add(m.group(1))
    return found


@pytest.mark.parametrize("value", sorted(
    PUBLISHED | {"x", "a" * 40, "abababababababababababababababababab", "change-me-" + "x" * 40}))
def test_weak_or_published_secrets_are_refused_everywhere(value: str) -> None:
    """Fault: production accepted a one-character secret and the .env.example placeholder."""
    from delivery.gateway import issue_token, verify_token

    for env in ({"DELIVERY_SECRET": value},
                {"DELIVERY_SECRET": value, "DELIVERY_ENV": "production",
                 "DELIVERY_DATABASE_URL": "postgresql://u@h/d",
                 "DELIVERY_BROKER_URL": "redis://h/0", "DELIVERY_REDIS_URL": "redis://h/0"}):
        with pytest.raises(SettingsError, match=r"^DELIVERY_SECRET") as info:
            Settings.from_env(env)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="DELIVERY_SECRET"):
        issue_token("bob", value, 60)
    with pytest.raises(ValueError, match="DELIVERY_SECRET"):
        verify_token("x.y", value)


def test_every_example_secret_in_the_tree_is_refused() -> None:
    examples = _published_examples()
    assert "CHANGE-ME-long-random-secret" in examples  # the .env.example placeholder
    for value in examples:
        with pytest.raises(WeakSecret):
            check_secret(value)


@pytest.mark.parametrize("var", ["DELIVERY_TOKEN_TTL_S", "DELIVERY_MESSAGE_TTL_S",
                                 "DELIVERY_ACK_TIMEOUT_S"])
@pytest.mark.parametrize("raw", ["inf", "nan", "1e308"])
def test_non_finite_or_huge_durations_are_refused(var: str, raw: str) -> None:
    if raw == "1e308" and var == "DELIVERY_ACK_TIMEOUT_S":
        return  # no upper bound there
    with pytest.raises(SettingsError, match=var):
        Settings.from_env({var: raw})


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}


@pytest.mark.parametrize("cmd", [
    ["-m", "workers.cli", "token", "bob"],
    ["-m", "workers.cli", "gateway", "--port", "0"],
    ["-m", "celery", "-A", "workers.app", "worker", "--pool", "solo"],
])
@pytest.mark.parametrize("secret", [None, "dev-insecure-secret"])
def test_processes_on_shared_services_refuse_to_start(cmd: list[str], secret: str | None,
                                                      tmp_path: Path) -> None:
    """Each role, pointed at a (here unreachable) broker and Redis without a real secret, exits
    at once with one line naming the variable, before touching any service."""
    env = {**_clean_env(), "DELIVERY_BROKER_URL": "redis://127.0.0.1:1/0",
           "DELIVERY_REDIS_URL": "redis://127.0.0.1:1/0", "DELIVERY_DATA_DIR": str(tmp_path)}
    if secret is not None:
        env["DELIVERY_SECRET"] = secret
    res = subprocess.run([sys.executable, *cmd], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "DELIVERY_SECRET" in lines[0], res.stderr
    assert res.stdout == ""
