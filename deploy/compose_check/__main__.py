"""deploy/compose-check: the compose stack, built without a registry and run for real.

Exit status: 0 nothing lost, 1 a message was lost (or not every message ended delivered), 2 a
prerequisite is missing or a step failed (one line says which).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import sys
import time
from typing import Any

from deploy.compose_check import engine, images, traffic
from deploy.compose_check.log import PHASES, CheckFailed, phase, say
from deploy.compose_check.stack import Stack


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="deploy/compose-check",
        description="Build the images without a registry (debootstrap + docker import), run "
        "docker-compose.yml with 3 workers and 2 gateways, send messages through HAProxy while "
        "a worker stops and the gateways scale down, check nothing was lost, tear down.")
    p.add_argument("--messages", type=int, default=1000, help="messages to send (default 1000)")
    p.add_argument("--rate", type=float, default=50.0, help="messages per second (default 50)")
    p.add_argument("--users", type=int, default=20, help="recipients (default 20)")
    p.add_argument("--late", type=int, default=4,
                   help="of them, users who connect only after the last send, so they are "
                   "replayed what waited for them (default 4)")
    p.add_argument("--timeout", type=float, default=240,
                   help="seconds to wait for every message to arrive after the last send")
    p.add_argument("--build-only", action="store_true",
                   help="build (or find cached) images, then stop: warms the cache")
    p.add_argument("--keep", action="store_true",
                   help="leave the stack running afterwards (tear down with --down)")
    p.add_argument("--down", action="store_true",
                   help="only tear down a stack left by --keep or an interrupted run")
    p.add_argument("--clean", action="store_true",
                   help="also remove the cached images this tool built")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    args = p.parse_args(argv)
    if args.messages < 1 or args.users < 2 or not 0 <= args.late < args.users or args.rate <= 0:
        p.error("need --messages >= 1, --users >= 2, 0 <= --late < --users, --rate > 0")
    return args


def build() -> dict[str, str]:
    with phase("base image"):
        base, _ = images.base_image()
    with phase("service images"):
        services = {k: tag for k, (tag, _) in images.service_images(base).items()}
    with phase("project image"):
        app = images.app_image(base)
    return {**services, "app": app}


async def exercise(stack: Stack, args: argparse.Namespace, result: traffic.Result) -> None:
    users = [f"u{i:02d}" for i in range(args.users)]
    online, late = users[: args.users - args.late], users[args.users - args.late:]
    with phase("tokens"):
        tokens = traffic.mint_tokens(stack, users)
    traffic.trust(str(stack.cert))
    clients = traffic.Clients(stack, tokens, result)
    worker3 = stack.container("worker", 3)

    def stop_worker() -> None:
        began = len(result.sent)
        say(f"stopping worker container {worker3} (docker stop: warm shutdown)")
        stack.stop_container(worker3)
        result.events.append(f"docker stop {worker3}: began after {began} sends, "
                             f"done after {len(result.sent)}")
        say(f"{worker3} stopped")

    def scale_down() -> None:
        began = len(result.sent)
        say("scaling gateways 2 -> 1 (its clients reconnect through HAProxy)")
        stack.scale("gateway", 1)
        result.events.append(f"gateways scaled 2 -> 1: began after {began} sends, "
                             f"done after {len(result.sent)}")
        say("gateways scaled to 1")

    try:
        with phase(f"connect {len(online)} clients through HAProxy (wss)"):
            await clients.connect(online)
        with phase(f"send {args.messages} messages at {args.rate:g}/s"):
            run = f"check-{secrets.token_hex(4)}"
            at = {max(1, args.messages // 3): stop_worker,
                  max(2, 2 * args.messages // 3): scale_down}
            await traffic.send(stack, result, args.messages, args.rate, users, run, at)
        with phase(f"connect {len(late)} late clients, wait for every message"):
            await clients.connect(late)
            await traffic.wait_all_received(result, args.timeout)
        with phase("store: every message delivered"):
            deadline = time.monotonic() + 60
            while True:
                await asyncio.to_thread(traffic.store_states, stack, result)
                say("store: " + " ".join(f"{k}={v}" for k, v in result.by_state.items()))
                if result.by_state.get("delivered", 0) >= len(result.sent) \
                        or time.monotonic() > deadline:
                    break
                await asyncio.sleep(2)
    finally:
        await clients.close()


def summary(result: traffic.Result, daemon: str) -> dict[str, Any]:
    received = len(result.sent) - len(result.lost)
    return {
        "sent": len(result.sent), "received": received, "lost": len(result.lost),
        "lost_ids": result.lost[:20], "duplicates_dropped_by_clients": result.duplicates,
        "client_reconnects": result.reconnects, "store_by_state": result.by_state,
        "flower_workers": result.flower_workers, "status_workers": result.status_workers,
        "status_exit": result.status_exit, "events": result.events,
        "dockerd": daemon, "phases_s": {n: round(t, 1) for n, t in PHASES},
    }


def report(s: dict[str, Any], as_json: bool) -> None:
    if as_json:
        json.dump(s, sys.stdout, indent=2)
        print()
        return
    print("\ncompose-check summary")
    print(f"  dockerd: {s['dockerd']}")
    print(f"  sent {s['sent']}  received {s['received']}  lost {s['lost']}"
          f"  (duplicates dropped by clients {s['duplicates_dropped_by_clients']},"
          f" client reconnects {s['client_reconnects']})")
    print("  store: " + "  ".join(f"{k}={v}" for k, v in s["store_by_state"].items()))
    print(f"  flower showed {len(s['flower_workers'])} workers: {', '.join(s['flower_workers'])}")
    print(f"  delivery status: exit {s['status_exit']}, {len(s['status_workers'])} workers "
          f"answering after the stop: {', '.join(s['status_workers'])}")
    for e in s["events"]:
        print(f"  event: {e}")
    if s["lost_ids"]:
        print(f"  lost (first 20): {' '.join(s['lost_ids'])}")
    print("  time per phase:")
    for name, took in s["phases_s"].items():
        print(f"    {took:7.1f}s  {name}")
    print(f"    {sum(s['phases_s'].values()):7.1f}s  total")


def main(argv: list[str]) -> int:
    args = parse(argv)
    daemon = engine.Daemon()
    result = traffic.Result()
    stack: Stack | None = None
    how = ""
    try:
        with phase("dockerd"):
            how = daemon.ensure()
            say(f"dockerd {how}")
        if args.down:
            with phase("tear down"):
                Stack.down_project()
                if args.clean:
                    say(f"removed images: {' '.join(images.remove_all()) or 'none'}")
            return 0
        imgs = build()
        if args.build_only:
            report(summary(result, how), args.json)
            return 0
        stack = Stack(imgs)
        Stack.down_project()  # whatever an interrupted run left
        extra = stack.write_extra_override()
        if extra:
            say(f"services mapped beyond the static override: {', '.join(extra)}")
        with phase("compose up --scale worker=3 --scale gateway=2"):
            try:
                stack.up(workers=3, gateways=2)
            except CheckFailed as exc:
                if "unhealthy" not in str(exc):
                    raise
                # A dependency slow to pass its health check (a loaded machine): wait for it,
                # then `up` again starts what waited on it.
                say(f"{exc}; waiting for it, then up again")
                stack.wait_healthy(("rabbitmq", "redis", "postgres", "gateway"))
                stack.up(workers=3, gateways=2)
            stack.wait_healthy(("rabbitmq", "redis", "postgres", "gateway", "proxy"))
        with phase("flower shows 3 workers"):
            deadline = time.monotonic() + 180
            while True:
                try:
                    result.flower_workers = traffic.flower_workers(stack)
                except OSError as exc:
                    result.flower_workers = []
                    say(f"flower not answering yet: {exc}")
                if len(result.flower_workers) >= 3:
                    break
                if time.monotonic() > deadline:
                    raise CheckFailed(f"flower shows {len(result.flower_workers)} workers, not 3")
                time.sleep(3)
            say(f"flower: {', '.join(result.flower_workers)}")
        asyncio.run(exercise(stack, args, result))
    except CheckFailed as exc:
        say(f"FAILED: {exc}")
        if stack is not None:
            print(stack.logs_tail(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        say("interrupted")
        return 2
    finally:
        if stack is not None and not args.keep:
            with phase("tear down (containers, networks, volumes)"):
                stack.down()
                if args.clean:
                    say(f"removed images: {' '.join(images.remove_all()) or 'none'}")
            shutil.rmtree(stack.dir, ignore_errors=True)  # the run's secrets and certificate
        if not args.keep and daemon.started:
            say("stopping the dockerd this run started")
            daemon.stop()
    s = summary(result, how)
    report(s, args.json)
    delivered = s["store_by_state"].get("delivered", 0)
    if s["lost"] or delivered < s["sent"]:
        say(f"LOSS: {s['lost']} not received, {delivered}/{s['sent']} delivered in the store")
        return 1
    say(f"OK: {s['sent']} sent, every one received and delivered")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
