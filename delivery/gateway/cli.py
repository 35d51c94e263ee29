"""``delivery gateway`` (run a node) and ``delivery token`` (issue a hello token)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from dataclasses import replace
from typing import Any

from delivery.configs import gateway_config
from delivery.gateway.config import GatewayConfig
from delivery.gateway.server import Gateway
from delivery.gateway.tokens import issue_token, keyring_for
from delivery.gil import apply_switch_interval
from delivery.runtime import get_runtime
from delivery.settings import Settings, get_settings
from delivery.sharding import make_presence as build_presence
from presence.runtime import MemoryNetwork

log = logging.getLogger("delivery.gateway")


def token_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="delivery token", description="Print a gateway hello token for USER: an HS256 JWT "
        "signed with the first hs256 key of DELIVERY_TOKEN_KEYS (its kid in the header), else "
        "with DELIVERY_SECRET; carries DELIVERY_TOKEN_AUDIENCE/ISSUER when set.")
    parser.add_argument("user", help="the user id the token is for")
    parser.add_argument("--ttl", type=float, default=None,
                        help="lifetime in seconds (default DELIVERY_TOKEN_TTL_S)")
    args = parser.parse_args(argv)
    settings = get_settings()
    ttl = settings.token_ttl_s if args.ttl is None else args.ttl
    try:
        token = issue_token(args.user, keyring_for(settings), ttl)
    except ValueError as exc:
        print(f"delivery token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def default_node_name() -> str:
    return f"gw-{socket.gethostname().split('.')[0]}-{os.getpid()}".replace(":", "-")


def gateway_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="delivery gateway", description="Run a WebSocket gateway node (/ws, demo page at /).")
    parser.add_argument("--node", default=None, help="node name, unique in the cluster "
                        "(default gw-HOST-PID)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--max-in-flight", type=int, default=None,
                        help="unacked frames per connection before the gateway waits")
    parser.add_argument("--hello-timeout", type=float, default=None,
                        help="seconds a new connection has to send its hello")
    parser.add_argument("--rate", type=float, default=None,
                        help="client frames per second allowed per connection")
    parser.add_argument("--compression", action="store_true",
                        help="enable permessage-deflate (off by default: small frames)")
    parser.add_argument("--log-level", default=None,
                        help="DEBUG, INFO, WARNING or ERROR (default DELIVERY_LOG_LEVEL or INFO)")
    args = parser.parse_args(argv)
    from delivery import logs

    logs.setup_server_process(args.log_level)
    settings = get_settings()
    apply_switch_interval(settings.gil_switch_ms)
    config = replace(gateway_config(settings), compression=args.compression)
    if args.max_in_flight is not None:
        config = replace(config, max_in_flight=args.max_in_flight)
    if args.hello_timeout is not None:
        config = replace(config, hello_timeout_s=args.hello_timeout)
    if args.rate is not None:
        config = replace(config, rate_per_s=args.rate, rate_burst=max(1, int(args.rate * 2)))
    node = args.node or default_node_name()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_gateway(node, args.host, args.port, settings, config))
    return 0


def make_presence(settings: Settings, node: str, network: MemoryNetwork | None = None) -> Any:
    """A presence node for ``node``: over Redis when configured (sharded: a writer replica in
    every shard, delivery.sharding), else in-process (``network``: a shared
    :class:`presence.MemoryNetwork`, e.g. the embedded demo's)."""
    return build_presence(settings, node, gateway=True, network=network)


async def run_gateway(node: str, host: str, port: int, settings: Settings,
                      config: GatewayConfig) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    runtime = get_runtime()
    if runtime.channels is None:
        if settings.redis_url:
            from delivery.channels import RedisChannels

            runtime.channels = RedisChannels(settings.redis_url, settings.key_prefix)
        else:
            from delivery.channels import MemoryChannels

            runtime.channels = MemoryChannels()
    presence = runtime.presence
    own_presence = presence is None
    if own_presence:
        presence = make_presence(settings, node)
        await asyncio.to_thread(presence.start)
        runtime.presence = presence
    gateway = Gateway(node, runtime, config, presence=presence)
    if settings.metrics_port > 0:
        from delivery import metrics

        metrics_at = metrics.start_metrics_server(settings.metrics_port, role="gateway")
        log.info("gateway %s: metrics on :%s/metrics", node, metrics_at)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    real_port = await gateway.start(host, port)
    log.info("gateway %s listening on ws://%s:%d/ws", node, host, real_port)
    if logging.getLogger("delivery").getEffectiveLevel() > logging.INFO:
        # Scripts wait for this line: say it even when the log level hides the one above.
        print(f"gateway {node} listening on ws://{host}:{real_port}/ws", file=sys.stderr,
              flush=True)
    await stop.wait()
    log.info("gateway %s: shutting down (%d connections)", node, len(gateway.conns))
    await gateway.stop()
    if own_presence and presence is not None:
        await asyncio.to_thread(presence.stop, True)
    log.info("gateway %s stopped", node)
