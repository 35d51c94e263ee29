"""Throughput of the push path against the in-process FCM stub.

``delivery bench push [--n 500] [--devices 1] [--database-url URL]`` prints:

- ``sender``: ``FcmSender.send`` (firebase-admin ``send_each``) of one message per call;
- ``batch``: ``send_each`` of ``--devices`` messages per call (one thread per message);
- ``push_message``: the whole step (lease, store reads, send, per-device rows, outcome CAS)
  for ``--n`` messages whose recipient has ``--devices`` devices, on SQLite (default, a
  temporary file) or the database URL given (it must be migrated).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from firebase_admin import messaging

from delivery.clock import later, utcnow
from delivery.db import make_engine
from delivery.push.fcm import FcmConfig, FcmSender, reset_senders
from delivery.push.service import PushOutcome, push_message
from delivery.push.stub import FcmStub
from delivery.runtime import Runtime, set_runtime
from delivery.settings import Settings
from delivery.store import Store
from delivery.vocabulary import Channel


def _msg(token: str) -> messaging.Message:
    m = messaging.Message(data={"message_id": "x", "preview": "hello"})
    m.token = token
    return m


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="delivery bench push")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--database-url", default="")
    args = ap.parse_args(argv)
    stub = FcmStub().start()
    try:
        sender = FcmSender(FcmConfig(project="bench", url=stub.url))
        sender.send([("warm", _msg("warm"))])
        t0 = time.perf_counter()
        for _ in range(args.n):
            sender.send([("t", _msg("t"))])
        dt = time.perf_counter() - t0
        print(f"sender: {args.n / dt:.0f} sends/s (1 message per send_each call)")
        batches = max(1, args.n // args.devices)
        t0 = time.perf_counter()
        for _ in range(batches):
            sender.send([(f"t{i}", _msg(f"t{i}")) for i in range(args.devices)])
        dt = time.perf_counter() - t0
        print(f"batch: {batches * args.devices / dt:.0f} sends/s "
              f"({args.devices} messages per send_each call)")
        sender.close()

        with tempfile.TemporaryDirectory() as tmp:
            url = args.database_url
            if not url:
                from delivery import migrate

                url = f"sqlite:///{Path(tmp) / 'bench.db'}"
                migrate.upgrade(url)
            store = Store(make_engine(url))
            rt = Runtime(settings=Settings(fcm_url=stub.url, fcm_project="bench"), store=store)
            set_runtime(rt)
            todo: list[tuple[str, int]] = []
            now = utcnow()
            for i in range(args.n):
                user = f"bench-{uuid.uuid4().hex[:8]}-{i}"
                for d in range(args.devices):
                    store.register_device(user, f"{user}-dev{d}", "android", now)
                msg, _ = store.accept(
                    message_id=uuid.uuid4(), sender="bench", recipient=user, body="hi",
                    client_msg_id=None, now=now, ttl_s=3600, deadline=later(60, now))
                attempt = store.start_attempt(msg, channel=Channel.PUSH, targets=[], now=now,
                                              deadline=later(60, now))
                assert attempt is not None
                todo.append((str(msg.id), attempt))
            t0 = time.perf_counter()
            outcomes = [push_message(mid, att) for mid, att in todo]
            dt = time.perf_counter() - t0
            set_runtime(None)
            reset_senders()
            store.engine.dispose()
        ok = outcomes.count(PushOutcome.PUSHED)
        print(f"push_message: {args.n / dt:.0f} messages/s, {args.n * args.devices / dt:.0f} "
              f"device sends/s ({args.devices} device(s) each, {ok}/{args.n} pushed, "
              f"{store.engine.dialect.name})")
    finally:
        stub.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
