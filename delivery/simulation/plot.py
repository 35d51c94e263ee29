"""``--plot``: loss and latency against presence replication delay, every strategy (the
registry does not use presence: its line is flat, the cost of its lookup)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from .engine import Simulation
from .params import Params


def sweep(params: Params, delays_ms: Sequence[float], messages: int,
          quiet: bool = True) -> list[tuple[float, dict[str, Any]]]:
    out: list[tuple[float, dict[str, Any]]] = []
    for d in delays_ms:
        p = dataclasses.replace(params, repl_delay_ms=d, messages=messages)
        res = Simulation(p).run()
        out.append((d, res["strategies"]))
        if not quiet:
            st = res["strategies"]
            sys.stderr.write(f"replication {d:6.0f} ms: " + "  ".join(
                f"{k} lost {v['lost_pct']:.3f}%" for k, v in st.items()) + "\n")
    return out


def plot_sweep(params: Params, path: str, delays_ms: Sequence[float], messages: int,
               quiet: bool = True) -> list[tuple[float, dict[str, Any]]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sweep(params, delays_ms, messages, quiet=quiet)
    xs = [d for d, _ in points]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, color in (("naive", "tab:red"), ("registry", "tab:blue"),
                        ("pipeline", "tab:green")):
        ax1.plot(xs, [s[name]["lost_pct"] for _, s in points], "o-", color=color, label=name)
        ax2.plot(xs, [s[name]["latency_ms"]["p50"] for _, s in points], "o-", color=color,
                 label=f"{name} p50")
        ax2.plot(xs, [s[name]["latency_ms"]["p99"] for _, s in points], "s--", color=color,
                 label=f"{name} p99")
    ax1.set_xlabel("mean presence replication delay (ms)")
    ax1.set_ylabel("messages lost (%)")
    ax1.set_title(f"Loss ({params.scenario}, {messages} messages per point)")
    ax1.grid(True, alpha=0.3)
    ax1.legend()
    ax2.set_xlabel("mean presence replication delay (ms)")
    ax2.set_ylabel("send -> first display (ms)")
    ax2.set_yscale("log")
    ax2.set_title("Latency")
    ax2.grid(True, alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return points
