"""Presence benchmark: ``delivery bench presence [--json]`` / ``python -m bench.presence``.

Measures (progress on stderr, results on stdout):

* ``convergence_ms``: join -> visible latency (p50/p99) across N replica
  processes over real Redis (each join is stamped with wall time in its meta;
  every other replica records when the join reaches it);
* ``merge_10k_ms``: merging one 10k-entry delta into a state (with joins built;
  ``merge_10k_nodiff_ms`` without, ``decode_10k_ms`` and ``decode_merge_10k_ms``
  for the decoding and both; ``decode_merge_10k_cpu_ms`` is the same in CPU time);
* ``transfer_100k_s``: a 100k-entry full transfer (extract, encode in chunks,
  decode, merge into an empty replica), plus ``transfer_100k_redis_s``: a new
  node joining over Redis until it holds the 100k entries;
* ``bytes_per_entry``: resident memory per entry at 10^6 entries (RSS delta);
* ``list_us``: mean ``list(key)`` latency at 10^6 entries;
* with ``--compare``, ``compare``: the 10k-entry decode and merge and the bytes per
  entry (fresh processes, without and with the gateway's ``{"node": ...}`` meta) of
  today's code and of ``bench/presence_v1`` (the code before the per-node cost cuts),
  measured in the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
import uuid
from typing import Any

from delivery.stats import percentile
from presence import state as state_mod
from presence import wire
from presence import wire as wire_mod
from presence.config import PresenceConfig
from presence.replica import Replica
from presence.runtime import PresenceNode
from presence.state import State
from presence.transport.redis import RedisTransport


def _log(msg: str) -> None:
    print(f"[bench presence] {msg}", file=sys.stderr, flush=True)


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def _cpu_s(p: Any) -> float:
    """CPU seconds (user + system) of a child process so far."""
    import os

    try:
        with open(f"/proc/{p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_convergence(url: str, replicas: int, joins: int, impl: str = "now") -> dict[str, Any]:
    import subprocess

    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    procs: list[subprocess.Popen[str]] = []

    def call(p: subprocess.Popen[str], op: str, **kw: Any) -> Any:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        p.stdin.flush()
        return json.loads(p.stdout.readline()).get("result")

    try:
        for i in range(replicas):
            p = subprocess.Popen(
                [sys.executable, "-m", "bench.presence_agent", "--url", url, "--prefix", prefix,
                 "--name", f"b{i}", "--impl", impl],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            )  # fmt: skip
            procs.append(p)
        for p in procs:
            assert p.stdout is not None
            json.loads(p.stdout.readline())
        for p in procs:
            call(p, "wait_synced", timeout=5.0)
        _log(f"{replicas} replicas up and synced; {joins} joins")
        for p in procs:
            call(p, "latencies")
        rng = random.Random(1)
        load0, cpu0, t0 = _loadavg(), sum(map(_cpu_s, procs)), time.monotonic()
        for j in range(joins):
            p = procs[j % replicas]
            call(p, "track", key=f"user-{j}", conn=f"conn-{j}", stamp=True)
            time.sleep(0.01 + rng.random() * 0.01)
        time.sleep(0.5)
        cpu = (sum(map(_cpu_s, procs)) - cpu0) / (time.monotonic() - t0)
        load = (load0 + _loadavg()) / 2
        lat: list[float] = []
        for p in procs:
            lat += [x * 1000 for x in call(p, "latencies")]
        expected = joins * (replicas - 1)
        _log(f"collected {len(lat)}/{expected} join observations")
        return {
            "p50": round(percentile(lat, 50), 3),
            "p99": round(percentile(lat, 99), 3),
            "max": round(max(lat), 3) if lat else None,
            "samples": len(lat),
            "expected": expected,
            "replicas": replicas,
            # what the figure depends on: the replicas' CPU, and how busy the machine was
            "replicas_cpu_cores": round(cpu, 3),
            "load_average": round(load, 1),
        }
    finally:
        for p in procs:
            try:
                call(p, "stop", graceful=True)
                p.wait(3)
            except Exception:
                p.kill()
                p.wait(3)


def bench_merge_10k(repeat: int = 5, impl: Any = None) -> dict[str, float]:
    """Decode and merge a 10k-entry delta into a state that holds 10k other entries.

    ``merge_10k_ms`` builds the joins (what a node with diff subscribers does);
    ``merge_10k_nodiff_ms`` is the same merge with nobody listening to diffs.
    ``impl``: a module pair ``(state, wire)``; today's by default (``--compare``
    also runs ``bench.presence_v1``, the code before the per-node cost cuts).
    """
    st, wire = impl or (state_mod, wire_mod)
    State = st.State
    times, decode, nodiff, total, cpu = [], [], [], [], []
    for r in range(repeat):
        src = State((f"src{r}", 1))
        for i in range(10_000):
            src.track(f"user-{i}", f"conn-{i}", {"device": "ios"})
        part = src.take_delta()
        assert part is not None
        frame = wire.encode_delta(src.replica, [part])
        dsts = []
        for _ in range(2):
            dst = State(("dst", 1))
            for i in range(10_000):  # a destination that already holds other entries
                dst.track(f"other-{i}", f"oc-{i}")
            dsts.append(dst)
        c = time.process_time()
        t = time.perf_counter()
        msg = wire.decode(frame)
        t1 = time.perf_counter()
        res = dsts[0].merge(msg.parts)
        t2 = time.perf_counter()
        cpu.append(time.process_time() - c)
        decode.append(t1 - t)
        times.append(t2 - t1)
        total.append(t2 - t)
        assert len(res.joins) == 10_000
        msg = wire.decode(frame)
        t = time.perf_counter()
        res = dsts[1].merge(msg.parts, diffs=False)
        nodiff.append(time.perf_counter() - t)
        assert len(dsts[1]) == 20_000
    return {
        "merge_10k_ms": round(statistics.median(times) * 1000, 3),
        "merge_10k_nodiff_ms": round(statistics.median(nodiff) * 1000, 3),
        "decode_10k_ms": round(statistics.median(decode) * 1000, 3),
        "decode_merge_10k_ms": round(statistics.median(total) * 1000, 3),
        # CPU time of this process: what other processes on the machine do not change
        "decode_merge_10k_cpu_ms": round(statistics.median(cpu) * 1000, 3),
        "frame_10k_bytes": len(frame),
    }


def bench_transfer_100k() -> dict[str, float]:
    src = Replica("src", 1, PresenceConfig())
    for i in range(100_000):
        src.state.track(f"user-{i}", f"conn-{i}", {"device": "ios"})
    src.state.take_delta()
    dst = State(("dst", 1))
    t = time.perf_counter()
    parts = src.state.extract(dst.clock(), exclude=dst.replica)
    frames = src._ack_frames(dst.replica, 1, parts)
    t_enc = time.perf_counter() - t
    merged: list[Any] = []
    for f in frames:
        merged += wire.decode(f).parts
    from presence.replica import _join_chunks

    res = dst.merge(_join_chunks([merged]))
    total = time.perf_counter() - t
    assert len(res.joins) == 100_000
    return {
        "transfer_100k_s": round(total, 4),
        "transfer_100k_encode_s": round(t_enc, 4),
        "transfer_100k_bytes": sum(len(f) for f in frames),
        "transfer_100k_frames": len(frames),
    }


def bench_transfer_redis(url: str, n: int = 100_000) -> float:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    cfg = PresenceConfig()
    a = PresenceNode("ta", RedisTransport(url, prefix, "ta"), cfg)
    a.start()
    for i in range(n):
        a.track(f"user-{i}", f"conn-{i}")
    deadline = time.monotonic() + 30
    while a.stats()["entries"] < n and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    b = PresenceNode("tb", RedisTransport(url, prefix, "tb"), cfg)
    t = time.perf_counter()
    b.start()
    while len(b.list_all()) < n and time.perf_counter() - t < 30:
        time.sleep(0.005)
    elapsed = time.perf_counter() - t
    a.stop()
    b.stop()
    return round(elapsed, 4)


def bench_memory_and_list(entries: int, impl: Any = None, meta: bool = False) -> dict[str, float]:
    """Resident bytes per entry: ``entries`` entries of 100 origins, merged as slices.

    ``meta``: every entry carries the gateway's meta ``{"node": origin}`` (decoded from
    the wire, one map per frame) instead of none.
    """
    st = impl[0] if impl else state_mod
    per = 10_000
    gc.collect()
    r0 = _rss()
    s = st.State(("worker", 1))
    for o in range(max(1, entries // per)):
        m = {"node": f"gw{o}"} if meta else st.EMPTY_META
        ents = tuple(
            (f"user-{o * per + i:07d}", f"conn-{o * per + i:07d}", dict(m) if meta else m)
            for i in range(per)
        )
        s.merge([st.SlicePart((f"gw{o}", 1), 1, ents)])
        del ents
    gc.collect()
    r1 = _rss()
    n = len(s)
    rng = random.Random(2)
    keys = [f"user-{rng.randrange(n):07d}" for _ in range(200_000)]
    t = time.perf_counter()
    for k in keys:
        s.list(k)
    mean_us = (time.perf_counter() - t) / len(keys) * 1e6
    samples = []
    for k in keys[:20_000]:
        t = time.perf_counter()
        s.list(k)
        samples.append((time.perf_counter() - t) * 1e6)
    return {
        "bytes_per_entry": round((r1 - r0) / n, 1),
        "entries": n,
        "list_us": round(mean_us, 3),
        "list_p99_us": round(percentile(samples, 99), 3),
    }


def _impl(name: str) -> Any:
    if name == "v1":
        from bench.presence_v1 import state as v1_state
        from bench.presence_v1 import wire as v1_wire

        return (v1_state, v1_wire)
    return (state_mod, wire_mod)


def memory_child(impl: str, entries: int, meta: bool) -> dict[str, float]:
    """``bench_memory_and_list`` in a fresh interpreter (same method for both implementations)."""
    import subprocess

    code = (
        "import json,sys; from bench.presence import bench_memory_and_list as b, _impl;"
        f"print(json.dumps(b({entries}, _impl({impl!r}), {meta!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    res: dict[str, float] = json.loads(out.stdout)
    return res


def compare(entries: int, url: str | None, replicas: int, joins: int) -> dict[str, Any]:
    """Today's code against ``bench.presence_v1`` in the same run, interleaved."""
    out: dict[str, Any] = {}
    if url is not None:
        for name in ("v1", "now", "v1", "now"):
            _log(f"convergence, {name} ...")
            c = bench_convergence(url, replicas, joins, impl=name)
            out.setdefault(name, {}).setdefault("convergence_ms", []).append(c)
    for name in ("v1", "now", "v1", "now"):
        r = bench_merge_10k(impl=_impl(name))
        keys = ("decode_10k_ms", "merge_10k_ms", "decode_merge_10k_ms", "decode_merge_10k_cpu_ms")
        for k in (*keys, "frame_10k_bytes"):
            out.setdefault(name, {}).setdefault(k, []).append(r[k])
    for name in ("v1", "now"):
        for meta in (False, True):
            m = memory_child(name, entries, meta)
            key = "bytes_per_entry_meta" if meta else "bytes_per_entry"
            out[name][key] = m["bytes_per_entry"]
            if not meta:
                out[name]["list_us"] = m["list_us"]
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="delivery bench presence")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--url", default=None, help="Redis URL (default: DELIVERY_REDIS_URL or local)")
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--joins", type=int, default=200)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--no-redis", action="store_true", help="skip the Redis measurements")
    ap.add_argument(
        "--compare",
        action="store_true",
        help="also measure the code before the per-node cost cuts (bench/presence_v1) in this run",
    )
    args = ap.parse_args(argv)
    import os

    url = args.url or os.environ.get("DELIVERY_REDIS_URL", "redis://127.0.0.1:6379/0")
    out: dict[str, Any] = {}
    if not args.no_redis:
        _log("convergence across processes over Redis ...")
        out["convergence_ms"] = bench_convergence(url, args.replicas, args.joins)
    _log("merge of a 10k-entry delta ...")
    out.update(bench_merge_10k())
    _log("100k-entry full transfer ...")
    out.update(bench_transfer_100k())
    if not args.no_redis:
        _log("100k-entry join over Redis ...")
        out["transfer_100k_redis_s"] = bench_transfer_redis(url)
    _log(f"memory and list(key) at {args.entries} entries ...")
    out.update(bench_memory_and_list(args.entries))
    if args.compare:
        _log("same-run comparison with bench/presence_v1 ...")
        out["compare"] = compare(
            args.entries, None if args.no_redis else url, args.replicas, args.joins
        )
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:28} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
