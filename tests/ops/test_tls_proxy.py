"""TLS for real: HAProxy with deploy/haproxy.cfg (its backend pointed at one local gateway
instead of Docker's DNS) and a certificate from deploy/make-dev-cert terminates wss://, sends the
WebSocket through to the gateway once its /readyz answers, and a client receives and acks."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from delivery.models import State
from delivery.store import Store
from tests.delivery.gateway.conftest import gateway_harness, recv_messages, run
from workers.devkit.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def haproxy_binary() -> str:
    binary = shutil.which("haproxy")
    if binary is None:
        reason = "haproxy not installed (apt-get install haproxy; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    return binary


def local_config(plain: int, tls: int, gateway: int) -> str:
    """deploy/haproxy.cfg with loopback ports, one gateway instead of DNS discovery and a
    connection limit that fits the test machine's descriptor limit."""
    cfg = (ROOT / "deploy" / "haproxy.cfg").read_text()
    # maxconn 50000 needs ~100k descriptors (compose raises nofile); a test needs few.
    cfg = cfg.replace("maxconn 50000", "maxconn 500")
    cfg = cfg.replace("bind :8080", f"bind 127.0.0.1:{plain}")
    cfg = cfg.replace("bind :8443", f"bind 127.0.0.1:{tls}")
    cfg, n = re.subn(r"^\s*server-template gw .*$",
                     f"    server gw1 127.0.0.1:{gateway} check inter 200ms", cfg, flags=re.M)
    # The HTTP API's backend (no `delivery api` here): no servers, so /v1/ answers 503.
    cfg = re.sub(r"^\s*server-template api .*$", "", cfg, flags=re.M)
    assert n == 1 and "uri /readyz" in cfg
    return cfg


def test_wss_through_haproxy(sqlite_store: Store, tmp_path: Path) -> None:
    binary = haproxy_binary()
    cert = tmp_path / "delivery.pem"
    subprocess.run([str(ROOT / "deploy" / "make-dev-cert"), str(cert)], check=True,
                   capture_output=True, timeout=60)
    client_tls = ssl.create_default_context(cafile=str(cert))  # trust the self-signed cert

    async def main() -> None:
        async with gateway_harness(sqlite_store) as h:
            plain, tls = free_port(), free_port()
            cfg = tmp_path / "haproxy.cfg"
            cfg.write_text(local_config(plain, tls, h.gateway.port))
            proxy = subprocess.Popen([binary, "-db", "-f", str(cfg)],
                                     env={**os.environ, "DELIVERY_TLS_CERT": str(cert)},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                url = f"wss://localhost:{tls}/ws"
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while True:  # until HAProxy has seen /readyz answer and sends us through
                    try:
                        ws = await connect(url, ssl=client_tls, compression=None)
                        break
                    except Exception as exc:  # refused, or 503 before the check passed
                        assert proxy.poll() is None, proxy.stdout.read()  # type: ignore[union-attr]
                        assert loop.time() < deadline, f"no way through the proxy: {exc!r}"
                        await asyncio.sleep(0.2)
                try:
                    await ws.send(json.dumps({"type": "hello", "token": h.token("bob")}))
                    welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    assert welcome["type"] == "welcome", welcome
                    msg = h.accept("bob", {"text": "over TLS"})
                    h.deliver(msg, [welcome["conn"]])
                    (frame,) = await recv_messages(ws, 1)
                    assert frame["body"] == {"text": "over TLS"}
                    await ws.send(json.dumps({"type": "ack", "id": frame["id"]}))
                    await h.wait_db(lambda: sqlite_store.get(msg.id).state  # type: ignore[union-attr]
                                    == State.DELIVERED, timeout=10)
                finally:
                    await ws.close()
            finally:
                proxy.terminate()
                proxy.wait(10)

    run(main(), timeout=90)
