"""The ``delivery`` command. Each subcommand lives in its own module, imported only when used."""

from __future__ import annotations

import importlib
import sys

# name -> ("module:function", one-line help). Each function takes argv (list[str]) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "migrate": ("workers.commands.store:migrate_main", "alembic upgrade head"),
    "send": ("workers.commands.store:send_main", "enqueue a message: --from A --to B TEXT"),
    "inspect": ("workers.commands.store:inspect_main", "a message's state and every attempt"),
    "status": ("workers.commands.status:main", "one-screen summary of the cluster"),
    "token": ("delivery.gateway.cli:token_main", "issue a gateway token for a user"),
    "gateway": ("delivery.gateway.cli:gateway_main", "run a WebSocket gateway node"),
    "worker": ("workers.commands.worker:main", "run a Celery worker with the right options"),
    "device": ("delivery.push.cli:device_main", "register a push device: device add USER TOKEN"),
    "fcm-stub": ("delivery.push.stub:main", "run the local FCM-compatible HTTP server"),
    "simulate": ("delivery.simulation.cli:main", "deterministic simulation: naive vs pipeline"),
    "bench": ("workers.commands.bench:main", "benchmarks: presence | gateway | e2e"),
    "demo": ("workers.demo:main", "the whole pipeline in one process, with a report"),
    "up": ("workers.commands.up:main", "every role in one process for local development"),
    "soak": ("bench.soak.cli:main", "fault-injection soak over real processes, with a report"),
}


def usage() -> str:
    lines = ["usage: delivery COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
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
    from delivery.settings import SettingsError

    try:
        result: int = getattr(module, func_name)(rest)
    except SettingsError as exc:
        print(f"delivery: configuration error: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
