"""Every configuration or connection error at start-up is one line naming the variable, exit 2,
and nothing is created on the way; ``migrate`` actions, ``--version`` and help on every option."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workers.cli import COMMANDS, main
from workers.devkit.procs import free_port
from workers.devkit.services import RUN_SECRET


def run(args: list[str], data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True,
        env={**base, "DELIVERY_DATA_DIR": str(data_dir), "DELIVERY_SECRET": RUN_SECRET, **env},
        timeout=120,
    )


def one_line_naming(out: subprocess.CompletedProcess[str], variable: str) -> None:
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], out.stderr
    assert "Traceback" not in out.stderr


MSG = "6f1c2d8e-5a4b-4c3d-9e8f-7a6b5c4d3e2f"
DEAD_PG = "postgresql://postgres@127.0.0.1:{port}/nothing"


@pytest.mark.parametrize(("variable", "value"), [
    ("DELIVERY_DATABASE_URL", "mysql://root@127.0.0.1/chat"),
    ("DELIVERY_DATABASE_URL", "postgresgl://postgres@127.0.0.1/chat"),
    ("DELIVERY_DATABASE_URL", DEAD_PG),
    ("DELIVERY_BROKER_URL", "reddis://127.0.0.1:6379/0"),
    ("DELIVERY_LOG_LEVEL", "LOUD"),
    ("DELIVERY_LOG_FORMAT", "xml"),
    ("DELIVERY_DB_POOL_SIZE", "0"),
])
def test_bad_setting_is_one_line(tmp_path: Path, variable: str, value: str) -> None:
    out = run(["inspect", MSG], tmp_path, **{variable: value.format(port=free_port())})
    one_line_naming(out, variable)


def test_inspect_before_migrate_creates_nothing(tmp_path: Path) -> None:
    out = run(["inspect", MSG], tmp_path)
    one_line_naming(out, "DELIVERY_DATABASE_URL")
    assert "delivery migrate" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_unmigrated_postgres_is_one_line(tmp_path: Path, pg_url: str) -> None:
    from workers.devkit.services import fresh_pg_database

    with fresh_pg_database("delivery_unmigrated") as url:
        out = run(["send", "--from", "a", "--to", "b", "hi"], tmp_path,
                  DELIVERY_DATABASE_URL=url)
    one_line_naming(out, "DELIVERY_DATABASE_URL")
    assert "run `delivery migrate`" in out.stderr


def test_gateway_with_unreachable_redis_is_one_line(tmp_path: Path, pg_url: str) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    out = run(["gateway", "--port", "0"], tmp_path, DELIVERY_DATABASE_URL=pg_url,
              DELIVERY_BROKER_URL=dead, DELIVERY_REDIS_URL=dead)
    one_line_naming(out, "DELIVERY_REDIS_URL")


def test_migrate_actions(tmp_path: Path) -> None:
    current = run(["migrate", "current"], tmp_path)
    assert current.returncode == 0 and "no database" in current.stdout
    assert list(tmp_path.iterdir()) == []
    sql = run(["migrate", "--sql"], tmp_path)
    assert sql.returncode == 0 and "CREATE TABLE messages" in sql.stdout, sql.stderr
    assert list(tmp_path.iterdir()) == []  # offline: no database touched
    assert run(["migrate"], tmp_path).returncode == 0
    current = run(["migrate", "current"], tmp_path)
    assert "(head)" in current.stdout, current
    history = run(["migrate", "history"], tmp_path)
    assert "<base> ->" in history.stdout
    down = run(["migrate", "downgrade", "base"], tmp_path)
    assert down.returncode == 0, down.stderr
    assert "(head)" not in run(["migrate", "current"], tmp_path).stdout
    assert run(["migrate", "downgrade"], tmp_path).returncode == 2  # needs a revision


def test_version(tmp_path: Path) -> None:
    out = run(["--version"], tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("delivery ")


def _actions(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)
        elif not isinstance(action, argparse._HelpAction):
            yield action


# Flower's options are Flower's own (click, not argparse): its help is Flower's. `bench` is a
# dispatcher (its usage lists the benchmarks; each benchmark's parser has its own help).
WITHOUT_PARSER_CHECK = {"flower", "bench"}


@pytest.mark.parametrize("name", sorted(set(COMMANDS) - WITHOUT_PARSER_CHECK))
def test_every_option_has_help(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.parse_known_args

    def spy(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        seen.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", spy)
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code in (0, None)
    assert seen, f"{name}: no argument parser ran"
    missing = [a.dest for p in seen for a in _actions(p) if not a.help]
    assert not missing, f"delivery {name}: options without help: {missing}"
    assert all(p.description for p in seen), name


def test_plain_celery_worker_on_an_unmigrated_database(tmp_path: Path) -> None:
    """The compose file runs ``celery -A workers.app worker``: the same one line, exit 2."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    base = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "threads",
         "-c", "1", "--without-gossip", "--without-mingle"],
        capture_output=True, text=True, timeout=120,
        env={**base, "DELIVERY_DATA_DIR": str(tmp_path), "DELIVERY_BROKER_URL": dead,
             "DELIVERY_REDIS_URL": dead, "DELIVERY_SECRET": RUN_SECRET})
    assert out.returncode == 2, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert "Traceback" not in text
    assert [ln for ln in text.splitlines() if "DELIVERY_DATABASE_URL" in ln], text
    assert list(tmp_path.iterdir()) == []
    bad = subprocess.run([sys.executable, "-m", "celery", "-A", "workers.app", "worker"],
                         capture_output=True, text=True, timeout=120,
                         env={**base, "DELIVERY_ACK_TIMEOUT_S": "-1"})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].endswith("DELIVERY_ACK_TIMEOUT_S must be > 0, "
                                                        "got -1.0")
