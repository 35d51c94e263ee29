"""``delivery up``: every role in one process for local development (embedded default).

A gateway with the demo page, a Celery worker on the in-process broker, presence, the recovery
sweep and the FCM stub, on SQLite under DELIVERY_DATA_DIR. ``delivery send`` from another shell
stores into the same SQLite file; this process's recovery sweep routes it within
DELIVERY_ACK_TIMEOUT_S + DELIVERY_SWEEP_INTERVAL_S.

For the demo chat page it also creates the group conversation ``demo`` (alice, bob, carol),
prints a sign-in link per user, and starts the development-only send endpoint
(workers/dev_api.py) the page sends through (``--no-dev-api``: off).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from delivery.logs import redact_handlers
from delivery.settings import get_settings

if TYPE_CHECKING:
    from delivery.gateway.tokens import Keyring


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="delivery up", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address the gateway listens on")
    parser.add_argument("--port", type=int, default=8765, help="gateway port (0: any free)")
    parser.add_argument("--dev-api-port", type=int, default=None,
                        help="port of the demo page's send endpoint (default: --port + 1; "
                        "0: any free)")
    parser.add_argument("--no-dev-api", action="store_true",
                        help="do not start the demo page's send endpoint (the page then "
                        "only receives)")
    parser.add_argument("--log-level", default="INFO",
                        help="DEBUG, INFO, WARNING or ERROR")
    args = parser.parse_args(argv)
    from delivery import logs

    logs.setup_process(logs.check_level(args.log_level, "--log-level"))  # DELIVERY_LOG_FORMAT
    logging.getLogger("alembic").setLevel(logging.WARNING)
    redact_handlers()  # no parameters or echoed body values in log lines
    # The demo page shows ticks on direct messages too (off by default elsewhere: its cost).
    os.environ.setdefault("DELIVERY_DIRECT_RECEIPTS", "1")
    settings = get_settings()
    if not settings.embedded:
        print("delivery up runs the embedded default; with a broker configured, run "
              "`delivery gateway` and `delivery worker` instead", file=sys.stderr)
        return 2
    dev_port = None if args.no_dev_api else (
        args.dev_api_port if args.dev_api_port is not None else (args.port + 1 if args.port else 0))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(args.host, args.port, dev_port))
    return 0


DEMO_CONVERSATION = "demo"
DEMO_USERS = ("alice", "bob", "carol")


def _demo_links(page: str, secret: str | Keyring, ttl_s: float, api: str | None) -> str:
    """One sign-in link per demo user: the page opens the ``demo`` conversation."""
    from urllib.parse import urlencode

    from delivery.gateway.tokens import issue_token

    lines = []
    for user in DEMO_USERS:
        query = {"token": issue_token(user, secret, ttl_s), "open": DEMO_CONVERSATION}
        if api is not None:
            query["api"] = api
        lines.append(f"  {user:<6} {page}?{urlencode(query)}")
    return "\n".join(lines)


async def _run(host: str, port: int, dev_port: int | None) -> None:
    from delivery.api import create_conversation
    from delivery.conversations.ids import ConversationError
    from delivery.gateway.tokens import keyring_for, verify_token
    from workers.dev_api import DevApi, api_sender, page_origins
    from workers.embedded import EmbeddedStack

    settings = get_settings()
    async with EmbeddedStack(settings, gateways=("gw-local",), host=host,
                             ports=(port,)) as stack:
        url = stack.url("gw-local")
        page = url.replace("ws://", "http://").removesuffix("/ws") + "/"
        # The gateway's keyring: links and the dev endpoint take what the gateway takes.
        secret = keyring_for(stack.settings)
        try:
            await asyncio.to_thread(create_conversation, DEMO_CONVERSATION, list(DEMO_USERS))
        except ConversationError as exc:  # an earlier run changed its members: keep them
            print(f"(demo conversation kept as it is: {exc})", file=sys.stderr)
        dev: DevApi | None = None
        if dev_port is not None:
            origins = page_origins(host, stack.gateways["gw-local"].port)
            dev = DevApi(host, dev_port, origins=origins,
                         verify=lambda token: verify_token(token, secret),
                         send=api_sender(stack.app)).start()
        links = _demo_links(page, secret, stack.settings.token_ttl_s,
                            dev.url if dev is not None else None)
        send_api = (f"{dev.url}/v1/messages (development only: the page sends as its user)"
                    if dev is not None else "off (--no-dev-api): the page only receives")
        print(f"""
delivery is up (embedded: SQLite at {stack.settings.effective_database_url})
  WebSocket   {url}
  demo page   {page}
  FCM stub    {stack.settings.fcm_url}
  page send   {send_api}

  demo chat (group "{DEMO_CONVERSATION}": {", ".join(DEMO_USERS)}), one sign-in link per user:
{links}

  get a token:      delivery token alice
  send a message:   delivery send --from bob --to alice "hello"
  to the group:     delivery send --from bob --conversation {DEMO_CONVERSATION} "hello all"
  follow it:        delivery inspect MESSAGE_ID

Ctrl-C stops every role gracefully.""", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("stopping...", file=sys.stderr)
        if dev is not None:
            dev.stop()
