"""The nemesis plan, pure: which fault runs when, for how long, and the quiet period after it.

No I/O and no clock: the runner walks the plan and the executors (``faults.py``) do the harm.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

# kind -> seconds the fault is held (0: a one-shot action such as kill -9 + restart).
HOLD_S: dict[str, float] = {
    "db_outage": 3.0,        # connections refused and backends terminated
    "pg_restart": 0.0,       # pg_ctl restart -m fast of a private instance
    "kill_worker": 0.0,      # kill -9, restarted at once
    "kill_gateway": 1.0,     # kill -9, restarted on the same port after the hold
    "kill_fcm": 1.0,         # kill -9 of the FCM stub, restarted on the same port
    "pause_worker": 15.0,    # SIGSTOP, SIGCONT after the hold
    "redis_restart": 0.0,    # private redis-server without persistence: shut down, started
    "broker_restart": 0.0,   # RabbitMQ: every connection of the private vhost closed
    "redis_cut": 3.0,        # the proxy drops and refuses the processes' Redis connections
    "presence_delay": 8.0,   # the proxy delays every Redis byte by DELAY_S
    "clock_skew": 15.0,      # one worker restarted with its clock 5 s fast, then restarted sane
}
DELAY_S = 1.2
SKEW = "+5s"

ALL = tuple(HOLD_S)
# Faults that are over within a few seconds: the quick soak in the test suite runs these.
FAST = ("db_outage", "kill_worker", "kill_gateway", "kill_fcm", "redis_restart",
        "broker_restart", "redis_cut", "presence_delay")
AMQP_ONLY = frozenset({"broker_restart"})


@dataclass(frozen=True)
class Step:
    index: int
    kind: str
    hold_s: float
    quiet_s: float


def parse_faults(spec: str, *, broker: str) -> list[str]:
    """``all``, ``fast`` or a comma list of kinds; faults the broker cannot have are dropped."""
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part == "all":
            names += ALL
        elif part == "fast":
            names += FAST
        elif part in HOLD_S:
            names.append(part)
        else:
            raise ValueError(f"unknown fault {part!r}; known: all, fast, {', '.join(ALL)}")
    kept = [n for n in dict.fromkeys(names) if broker == "rabbitmq" or n not in AMQP_ONLY]
    return kept


def plan(kinds: Sequence[str], *, rounds: int, quiet_s: float, seed: int | None = None,
         hold_scale: float = 1.0) -> list[Step]:
    """Every kind once per round, one at a time; with a seed each round is shuffled."""
    rng = random.Random(seed)
    steps: list[Step] = []
    for _ in range(rounds):
        order = list(kinds)
        if seed is not None:
            rng.shuffle(order)
        for kind in order:
            steps.append(Step(len(steps), kind, HOLD_S[kind] * hold_scale, quiet_s))
    return steps


def duration(steps: Sequence[Step], *, warmup_s: float, action_s: float = 5.0) -> float:
    """A rough length of the plan (restarts take ``action_s``), for the traffic's sizing."""
    return warmup_s + sum(s.hold_s + s.quiet_s + action_s for s in steps)
