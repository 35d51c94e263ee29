"""``delivery soak`` options and its place in the command table."""

from __future__ import annotations

import pytest

from bench.soak.cli import parse
from workers.cli import COMMANDS


def test_the_command_is_wired() -> None:
    assert COMMANDS["soak"][0] == "bench.soak.cli:main"


def test_options_become_the_config() -> None:
    cfg, args = parse(["--broker", "rabbitmq", "--messages", "10", "--rate", "5", "--clients",
                       "16", "--faults", "db_outage,broker_restart", "--rounds", "2", "--json"])
    assert (cfg.broker, cfg.messages, cfg.rate, cfg.clients, cfg.rounds) == (
        "rabbitmq", 10, 5.0, 16, 2)
    assert cfg.faults == ("db_outage", "broker_restart") and args.json


def test_redis_broker_has_no_rabbitmq_restart_and_bad_input_is_refused() -> None:
    cfg, _ = parse(["--faults", "broker_restart,kill_fcm"])
    assert cfg.faults == ("kill_fcm",)
    with pytest.raises(SystemExit):
        parse(["--rate", "0"])
    with pytest.raises(SystemExit):
        parse(["--faults", "nope"])
