"""``delivery api``: serve ``POST /v1/messages`` under uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import sys

from delivery.gil import apply_switch_interval
from delivery.settings import Settings, SettingsError, get_settings

log = logging.getLogger("delivery.api.http")


def check(settings: Settings) -> None:
    """The settings ``delivery api`` needs (one line naming the variable, else)."""
    if not settings.api_key_list:
        raise SettingsError("DELIVERY_API_KEYS is required: the server keys producers send "
                            "as 'Authorization: Bearer KEY' (comma-separated, for rotation)")
    if settings.embedded or not settings.database_url:
        raise SettingsError("delivery api needs DELIVERY_DATABASE_URL and DELIVERY_BROKER_URL "
                            "(it stores each message, then enqueues it for the workers)")


async def serve(host: str, port: int, settings: Settings) -> None:
    import uvicorn

    from delivery.httpapi.app import create_app

    app = create_app(settings)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    # No access log (uvicorn's: one line a request); answers are counted in the metrics.
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=10, server_header=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        real = sock.getsockname()[1]
        log.info("api listening on http://%s:%d/v1/messages", host, real)
        if logging.getLogger("delivery").getEffectiveLevel() > logging.INFO:
            print(f"api listening on http://{host}:{real}/v1/messages", file=sys.stderr,
                  flush=True)
    await task


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="delivery api", description="Serve POST /v1/messages (authenticated with "
        "DELIVERY_API_KEYS) for producers in any language; OpenAPI at /openapi.json.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8780, help="0 picks a free port")
    parser.add_argument("--log-level", default=None,
                        help="DEBUG, INFO, WARNING or ERROR (default DELIVERY_LOG_LEVEL or INFO)")
    args = parser.parse_args(argv)
    from delivery import logs

    logs.setup_server_process(args.log_level)
    settings = get_settings()
    apply_switch_interval(settings.gil_switch_ms)
    check(settings)
    if settings.metrics_port > 0:
        from delivery import metrics

        metrics.start_metrics_server(settings.metrics_port, role="api")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, settings))
    return 0
