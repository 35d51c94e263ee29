"""``delivery send`` and ``delivery inspect``."""

from __future__ import annotations

import argparse
import json
import sys
import uuid

from delivery.jsondepth import too_deep
from delivery.runtime import get_runtime
from delivery.settings import get_settings
from delivery.validation import InvalidMessage


def send_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="delivery send", description="Enqueue a text message.")
    parser.add_argument("--from", dest="sender", required=True, help="sender's user id")
    parser.add_argument("--to", dest="recipient", required=True, help="recipient's user id")
    parser.add_argument("--client-msg-id",
                        help="idempotency key: a second send with the same sender and id is "
                        "stored and delivered once")
    parser.add_argument("--ttl", type=float, help="seconds before an undeliverable message expires")
    parser.add_argument("--json-body", action="store_true", help="TEXT is a JSON document")
    parser.add_argument("text", help="message text (or a JSON body with --json-body)")
    args = parser.parse_args(argv)
    depth = get_settings().max_body_depth
    if args.json_body and too_deep(args.text, depth):  # json.loads would recurse and crash
        print(f"delivery send: invalid body: is nested deeper than {depth} levels "
              "(DELIVERY_MAX_BODY_DEPTH)", file=sys.stderr)
        return 2
    try:
        body = json.loads(args.text) if args.json_body else {"text": args.text}
    except (json.JSONDecodeError, RecursionError) as exc:
        print(f"delivery send: TEXT is not JSON: {exc}", file=sys.stderr)
        return 2
    from delivery.api import send_message
    from workers.app import app

    if get_settings().embedded:
        # No broker to hand the task to: run it here, so the message is stored at once.
        from delivery.tasks import send

        try:
            msg_id = send(args.sender, args.recipient, body, args.client_msg_id, args.ttl)
        except InvalidMessage as exc:
            print(f"delivery send: {exc}", file=sys.stderr)
            return 2
        print(msg_id)
        return 0
    try:
        msg_id = send_message(args.sender, args.recipient, body, client_msg_id=args.client_msg_id,
                              ttl_s=args.ttl, app=app)
    except InvalidMessage as exc:
        print(f"delivery send: {exc}", file=sys.stderr)
        return 2
    print(msg_id)
    return 0


def inspect_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="delivery inspect",
                                     description="A message's state and every attempt.")
    parser.add_argument("message_id", help="the id `delivery send` or send_message returned")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    try:
        msg_id = uuid.UUID(args.message_id)
    except ValueError:
        print(f"delivery inspect: not a message id: {args.message_id!r}", file=sys.stderr)
        return 2
    store = get_runtime().store
    msg = store.get(msg_id)
    if msg is None:
        print(f"delivery inspect: no message {msg_id}", file=sys.stderr)
        return 1
    attempts = store.attempts_of(msg_id)
    if args.json:
        out = msg.as_dict()
        out["attempts_made"] = out.pop("attempts")
        out["attempts"] = [a.as_dict() for a in attempts]
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(f"message   {msg.id}")
    print(f"state     {msg.state}")
    print(f"from      {msg.sender}  to {msg.recipient}  client id {msg.client_msg_id or '-'}")
    print(f"created   {msg.created_at.isoformat()}  expires {msg.expires_at.isoformat()}")
    if msg.delivered_at:
        print(f"delivered {msg.delivered_at.isoformat()} on {msg.delivered_conn}")
    if msg.pushed_at:
        print(f"pushed    {msg.pushed_at.isoformat()}")
    if msg.last_error:
        print(f"error     {msg.last_error}")
    print(f"attempts  {msg.attempts}")
    for a in attempts:
        where = f"{a.node or '-'}/{a.conn or '-'}"
        took = ""
        if a.finished_at:
            took = f" after {(a.finished_at - a.started_at).total_seconds() * 1000:.1f} ms"
        print(f"  #{a.attempt} {a.channel:<4} {where:<40} {a.result or 'open'}{took}"
              f"{'  ' + a.detail if a.detail else ''}")
    return 0
