"""The ``delivery`` command. Each subcommand lives in its own module, imported only when used."""

from __future__ import annotations

import importlib
import os
import sys

# name -> ("module:function", one-line help). Each function takes argv (list[str]) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "migrate": ("workers.commands.migrate:main",
                "schema migrations: upgrade (default), current, history, downgrade REV"),
    "send": ("workers.commands.store:send_main",
             "enqueue a message: --from A --to B TEXT, or --from A --conversation ID TEXT"),
    "conversation": ("workers.commands.conversation:main",
                     "group conversations: create ID --members a,b | add|remove ID USER... | "
                     "show ID"),
    "inspect": ("workers.commands.store:inspect_main", "a message's state and every attempt"),
    "prune": ("workers.commands.prune:main", "prune attempt rows of settled messages"),
    "status": ("workers.commands.status:main", "one-screen summary of the cluster"),
    "token": ("delivery.gateway.cli:token_main", "issue a gateway token for a user"),
    "gateway": ("delivery.gateway.cli:gateway_main", "run a WebSocket gateway node"),
    "worker": ("workers.commands.worker:main", "run a Celery worker with the right options"),
    "flower": ("workers.flower:main", "Flower, read-only (no task execution), password required"),
    "device": ("delivery.push.cli:device_main", "register a push device: device add USER TOKEN"),
    "fcm-stub": ("delivery.push.stub:main", "run the local FCM-compatible HTTP server"),
    "simulate": ("delivery.simulation.cli:main",
                 "deterministic simulation: naive vs registry vs pipeline"),
    "capacity": ("delivery.simulation.capacity_cli:main",
                 "presence capacity model: per-replica traffic, memory, convergence"),
    "bench": ("workers.commands.bench:main", "benchmarks: presence|gateway|push|e2e|clients"),
    "demo": ("workers.demo.cli:main", "the whole pipeline in one process, with a report"),
    "up": ("workers.commands.up:main", "every role in one process for local development"),
    "soak": ("bench.soak.cli:main", "fault-injection soak over real processes, with a report"),
}


# Commands that need the database at the current schema (checked before they touch it, so a
# missing or unmigrated database is one line and no empty SQLite file is created).
NEEDS_DATABASE = {"send", "inspect", "device", "gateway", "worker", "conversation"}
# Commands that also need Redis (presence, node channels) and, for workers, the broker.
NEEDS_REDIS = {"gateway", "worker"}
NEEDS_BROKER = {"worker"}


def usage() -> str:
    lines = ["usage: delivery [--version] COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`delivery COMMAND --help` describes a command's options."]
    return "\n".join(lines)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("delivery")
    except PackageNotFoundError:
        return "unknown"


def preflight(name: str, argv: list[str]) -> None:
    """Check settings and the services ``name`` needs; raise SettingsError (one line)."""
    if any(a in ("-h", "--help", "--dry-run") for a in argv):
        return
    from delivery import logs
    from delivery import preflight as checks
    from delivery.settings import get_settings

    logs.configured_level()
    logs.configured_format()
    settings = get_settings()
    if name in NEEDS_DATABASE:
        checks.check_database(settings)
    if name in NEEDS_REDIS and not settings.embedded:
        checks.check_redis(settings)
    if name in NEEDS_BROKER:
        checks.check_broker(settings)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(f"delivery {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"delivery: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"delivery: command {name!r} is not available in this build", file=sys.stderr)
            return 2
        raise
    from delivery.preflight import describe
    from delivery.settings import SettingsError

    try:
        preflight(name, rest)
        result: int = getattr(module, func_name)(rest)
    except SettingsError as exc:
        print(f"delivery: configuration error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`delivery migrate --sql | head`): stop quietly, like other tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        line = describe(exc)
        if line is None:
            raise
        print(f"delivery: {line}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
