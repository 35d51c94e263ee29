"""``delivery up``: every role in one process for local development (embedded default).

A gateway with the demo page, a Celery worker on the in-process broker, presence, the recovery
sweep and the FCM stub, on SQLite under DELIVERY_DATA_DIR. ``delivery send`` from another shell
stores into the same SQLite file; this process's recovery sweep routes it within
DELIVERY_ACK_TIMEOUT_S + DELIVERY_SWEEP_INTERVAL_S.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from delivery.logs import redact_handlers
from delivery.settings import get_settings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="delivery up", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address the gateway listens on")
    parser.add_argument("--port", type=int, default=8765, help="gateway port (0: any free)")
    parser.add_argument("--log-level", default="INFO",
                        help="DEBUG, INFO, WARNING or ERROR")
    args = parser.parse_args(argv)
    from delivery import logs

    logs.setup_process(logs.check_level(args.log_level, "--log-level"))  # DELIVERY_LOG_FORMAT
    logging.getLogger("alembic").setLevel(logging.WARNING)
    redact_handlers()  # no parameters or echoed body values in log lines
    settings = get_settings()
    if not settings.embedded:
        print("delivery up runs the embedded default; with a broker configured, run "
              "`delivery gateway` and `delivery worker` instead", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(args.host, args.port))
    return 0


async def _run(host: str, port: int) -> None:
    from workers.embedded import EmbeddedStack

    settings = get_settings()
    async with EmbeddedStack(settings, gateways=("gw-local",), host=host,
                             ports=(port,)) as stack:
        url = stack.url("gw-local")
        page = url.replace("ws://", "http://").removesuffix("/ws") + "/"
        print(f"""
delivery is up (embedded: SQLite at {stack.settings.effective_database_url})
  WebSocket   {url}
  demo page   {page}
  FCM stub    {stack.settings.fcm_url}

  get a token:      delivery token alice
  send a message:   delivery send --from bob --to alice "hello"
  follow it:        delivery inspect MESSAGE_ID

Ctrl-C stops every role gracefully.""", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("stopping...", file=sys.stderr)
