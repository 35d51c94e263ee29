"""``delivery simulate``: the lost-message race: naive presence routing, a strongly consistent
registry and the pipeline.

    delivery simulate --scenario seed --messages 1000000 --json
    delivery simulate --scenario chaos --seed 7
    delivery simulate --scenario seed --plot race.png

stdout is deterministic (the same arguments give the same bytes); progress and speed go to
stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any

from .engine import Simulation
from .params import SCENARIOS, Params, scenario_params

# flag -> (Params field, help); types come from the Params field.
KNOBS: dict[str, tuple[str, str]] = {
    "--users": ("users", "number of users"),
    "--gateways": ("gateways", "gateway nodes (each with a presence replica)"),
    "--workers": ("workers", "worker nodes (each with a presence replica)"),
    "--rate": ("rate", "messages per virtual second"),
    "--session-s": ("session_s", "mean connection lifetime (1/reconnect rate per user)"),
    "--gap-s": ("gap_s", "mean offline time before a reconnect"),
    "--same-node": ("same_node", "probability that a reconnect lands on the same gateway"),
    "--repl-delay-ms": ("repl_delay_ms", "mean presence replication latency per link"),
    "--repl-jitter": ("repl_jitter", "per-link latency spread: uniform delay*(1 +- jitter)"),
    "--link-change-s": ("link_change_s", "every link's latency is drawn again this often"),
    "--repl-frame-jitter-ms": ("repl_frame_jitter_ms", "per-frame latency noise (reorders)"),
    "--repl-loss": ("repl_loss", "presence frame loss probability"),
    "--heartbeat-ms": ("heartbeat_ms", "presence heartbeat period"),
    "--batch-ms": ("batch_ms", "presence delta batching"),
    "--node-latency-ms": ("node_latency_ms", "worker <-> gateway channel latency"),
    "--client-latency-ms": ("client_latency_ms", "gateway <-> client one-way latency"),
    "--frame-loss": ("frame_loss", "node-channel frame (deliver/nack) loss probability"),
    "--half-open": ("half_open", "fraction of disconnects the gateway notices late"),
    "--detect-s": ("detect_s", "how late a half-open disconnect is noticed"),
    "--gateway-crash-s": ("gateway_crash_s", "mean gateway up time between crashes (0: never)"),
    "--worker-crash-s": ("worker_crash_s", "mean worker up time between crashes (0: never)"),
    "--downtime-s": ("downtime_s", "mean time a crashed node stays down"),
    "--partition-every-s": ("partition_every_s", "mean time between partitions (0: never)"),
    "--partition-s": ("partition_s", "mean partition duration"),
    "--fcm-unregistered": ("fcm_unregistered", "fraction of users with an unregistered token"),
    "--fcm-no-device": ("fcm_no_device", "fraction of users without a device"),
    "--fcm-transient": ("fcm_transient", "probability that an FCM call fails transiently"),
    "--fcm-latency-ms": ("fcm_latency_ms", "push notification latency"),
    "--dup-send": ("dup_send", "probability that the sender's app sends a message twice"),
    "--group-size": ("group_size", "recipients of each message (a group conversation)"),
    "--ack-timeout-s": ("ack_timeout_s", "policy: ack timeout"),
    "--max-attempts": ("max_attempts", "policy: attempts before push"),
    "--retry-backoff-s": ("retry_backoff_s", "policy: wait after a nack"),
    "--offline-grace-s": ("offline_grace_s", "policy: wait before pushing a new message"),
    "--reconnect-window-s": ("reconnect_window_s",
                             "policy: after a nack, keep re-checking this long after the send"),
    "--registry-lookup-ms": ("registry_lookup_ms",
                             "registry strategy: lookup round trip per message"),
    "--registry-write-ms": ("registry_write_ms",
                            "registry strategy: a connect/disconnect write lands after this"),
    "--ttl-s": ("ttl_s", "message TTL"),
    "--drain-s": ("drain_s", "virtual time after the last message before outcomes are read"),
}

PLOT_DELAYS_MS = (0.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="delivery simulate",
        description="Deterministic simulation of the lost-message race: naive presence "
        "routing, a strongly consistent registry and the pipeline, under the same schedule.",
    )
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), default="seed",
                    help="seed: the article's race; chaos: every fault; scale: many users; "
                    "group: the race for 50-recipient group messages (counts per recipient)")
    ap.add_argument("--messages", type=int, default=None, help="messages to send")
    ap.add_argument("--seed", type=int, default=1, help="random seed")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--plot", metavar="FILE.png", help="plot loss and latency vs replication "
                    "delay for both strategies")
    ap.add_argument("--plot-messages", type=int, default=50_000,
                    help="messages per point of the --plot sweep")
    ap.add_argument("--pareto", action="store_true", help="run candidate push rules (offline "
                    "grace, reconnect window, asking the last gateway) on this scenario and "
                    "print unnecessary pushes against latency p99, with the Pareto front")
    ap.add_argument("--quiet", action="store_true", help="no progress or speed on stderr")
    fields = {f.name: f for f in dataclasses.fields(Params)}
    for flag, (name, text) in KNOBS.items():
        default = fields[name].default
        typ: Any = type(default)
        if typ is bool:
            typ = int
        ap.add_argument(flag, dest=name, type=typ, default=None, help=f"{text} [{default}]")
    ap.add_argument("--reconnect-rate", type=float, default=None, metavar="PER_MIN",
                    help="reconnects per user per minute (sets --session-s to 60/PER_MIN)")
    ap.add_argument("--no-push", dest="push_enabled", action="store_false", default=None,
                    help="policy: push not configured (MarkPending instead of Push)")
    ap.add_argument("--no-probe", dest="probe_last_node", action="store_false", default=None,
                    help="policy: push a user who looks offline without asking their last "
                    "gateway first")
    return ap


class Progress:
    """A progress bar on stderr (only for long runs; a line per 10 % when not a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        pct = 100 * done // total
        if pct == self.last or (not self.tty and pct % 10):
            return
        self.last = pct
        bar = "#" * (pct // 4)
        line = f"[{bar:<25}] {pct:3d}% {done}/{total} messages"
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if done >= total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _overrides(ns: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": ns.messages, "seed": ns.seed}
    for _, (name, _t) in KNOBS.items():
        out[name] = getattr(ns, name)
    out["push_enabled"] = ns.push_enabled
    out["probe_last_node"] = ns.probe_last_node
    if ns.reconnect_rate is not None:
        if ns.reconnect_rate <= 0:
            raise ValueError("--reconnect-rate must be > 0")
        out["session_s"] = 60.0 / ns.reconnect_rate
    return out


ROWS = ("messages", "delivered_ws", "pushed", "pending", "expired", "lost", "duplicates_shown",
        "unnecessary_pushes")


def format_table(result: dict[str, Any], world: dict[str, Any] | None = None) -> str:
    st = result["strategies"]
    names = ("naive", "registry", "pipeline")
    lines = [f"scenario {result['scenario']}  seed {result['seed']}  "
             f"messages {result['params']['messages']}"]
    if result["params"].get("group_size", 1) > 1:
        lines.append(f"group messages of {result['params']['group_size']} recipients: the rows "
                     "below count recipient deliveries")
    if world is not None:
        lines.append(
            f"virtual time {world['virtual_s']:.1f} s, {world['connections']} connections, "
            f"{world['gateway_crashes']} gateway / {world['worker_crashes']} worker crashes, "
            f"{world['partitions']} partitions, presence frames {world['presence_frames_sent']} "
            f"sent / {world['presence_frames_lost']} lost"
        )
    lines.append(f"{'':<22}" + "".join(f"{n:>16}" for n in names))
    for row in ROWS:
        cells = []
        for n in names:
            v = st[n][row]
            if row in ("lost", "pushed", "delivered_ws") and st[n]["messages"]:
                cells.append(f"{v} ({100.0 * v / st[n]['messages']:.2f}%)")
            else:
                cells.append(str(v))
        lines.append(f"{row:<22}" + "".join(f"{c:>16}" for c in cells))
    for q in ("p50", "p99", "max"):
        lines.append(f"{'latency ' + q + ' ms':<22}"
                     + "".join(f"{st[n]['latency_ms'][q]:>16.1f}" for n in names))
    for row in ("duplicate_frames_deduped", "ws_attempts", "nacks", "redirects",
                "replayed_frames", "push_calls", "dup_sends"):
        lines.append(f"{row:<22}" + "".join(f"{st[n][row]:>16}" for n in names))
    return "\n".join(lines)


def run_once(params: Params, *, progress: bool = False,
             quiet: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    bar = Progress(progress and not quiet)
    sim = Simulation(params, progress=bar)
    t0 = time.perf_counter()
    result = sim.run()
    dt = time.perf_counter() - t0
    if not quiet:
        rate = params.messages / dt if dt > 0 else 0.0
        sys.stderr.write(f"simulated {params.messages} messages in {dt:.2f} s: "
                         f"{rate:,.0f} messages/s\n")
    return result, sim.world_stats()


def replay_command(params: Params) -> str:
    """The ``delivery simulate`` command line that reproduces ``params`` exactly."""
    base = scenario_params(params.scenario)
    parts = ["delivery simulate", f"--scenario {params.scenario}",
             f"--messages {params.messages}", f"--seed {params.seed}"]
    for flag, (name, _) in KNOBS.items():
        v = getattr(params, name)
        if v != getattr(base, name):
            parts.append(f"{flag} {v!r}")
    if not params.push_enabled:
        parts.append("--no-push")
    if not params.probe_last_node:
        parts.append("--no-probe")
    unexposed = [f.name for f in dataclasses.fields(Params)
                 if f.name not in {n for n, _ in KNOBS.values()}
                 and f.name not in ("scenario", "messages", "seed", "push_enabled",
                                    "probe_last_node", "extra")
                 and getattr(params, f.name) != getattr(base, f.name)]
    if unexposed:
        parts.append("# also set: " + ", ".join(f"{n}={getattr(params, n)!r}" for n in unexposed))
    return " ".join(parts)


def _pareto(params: Params, as_json: bool, quiet: bool) -> int:
    from .pareto import format_points, pareto_front, rules, sweep_rules

    points = sweep_rules(params, rules(), quiet=quiet)
    front = pareto_front(points)
    if as_json:
        sys.stdout.write(json.dumps({
            "scenario": params.scenario, "seed": params.seed, "messages": params.messages,
            "points": [{**dataclasses.asdict(p.rule), **{k: v for k, v in
                        dataclasses.asdict(p).items() if k != "rule"},
                        "front": p in front} for p in points],
        }) + "\n")
    else:
        sys.stdout.write(format_points(points, front) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        params = scenario_params(ns.scenario, **_overrides(ns))  # may raise ValueError
    except (ValueError, TypeError) as exc:
        print(f"delivery simulate: {exc}", file=sys.stderr)
        return 2
    if ns.pareto:
        return _pareto(params, ns.json, ns.quiet)
    if ns.plot:
        from .plot import plot_sweep

        plot_sweep(params, ns.plot, PLOT_DELAYS_MS, ns.plot_messages, quiet=ns.quiet)
        if not ns.quiet:
            sys.stderr.write(f"plot written to {ns.plot}\n")
    result, world = run_once(params, progress=params.messages >= 200_000, quiet=ns.quiet)
    if ns.json:
        sys.stdout.write(json.dumps(result, sort_keys=False) + "\n")
    else:
        sys.stdout.write(format_table(result, world) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
