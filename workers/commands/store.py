"""``delivery send`` (direct or to a group conversation) and ``delivery inspect``."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import datetime

from delivery.jsondepth import too_deep
from delivery.runtime import get_runtime
from delivery.settings import get_settings
from delivery.store import MessageRecord, Store
from delivery.validation import InvalidMessage


def send_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="delivery send", description="Enqueue a text message.")
    parser.add_argument("--from", dest="sender", required=True, help="sender's user id")
    to = parser.add_mutually_exclusive_group(required=True)
    to.add_argument("--to", dest="recipient", help="recipient's user id (a direct message)")
    to.add_argument("--conversation",
                    help="a group conversation's id: every member but the sender receives it")
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
    if args.conversation is not None:
        return _send_group(args, body)
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


def _send_group(args: argparse.Namespace, body: object) -> int:
    from delivery.api import SendNotAccepted, send_to_conversation
    from workers.app import app

    try:
        if get_settings().embedded:
            from delivery.tasks import send_group

            msg_id = send_group(args.sender, args.conversation, body, args.client_msg_id,
                                args.ttl)
        else:
            msg_id = send_to_conversation(args.sender, args.conversation, body,
                                          client_msg_id=args.client_msg_id, ttl_s=args.ttl,
                                          app=app)
    except (InvalidMessage, SendNotAccepted) as exc:
        print(f"delivery send: {exc}", file=sys.stderr)
        return 2
    print(msg_id)
    return 0


def _recipients(rows: list[MessageRecord]) -> dict[str, dict[str, object]]:
    return {m.recipient: {"state": m.state, "attempts": m.attempts} for m in rows}


def _inspect_group(store: Store, msg_id: uuid.UUID, as_json: bool) -> int:
    group = store.group_message(msg_id)
    if group is None:
        print(f"delivery inspect: no message {msg_id}", file=sys.stderr)
        return 1
    rows = store.group_rows(msg_id)
    if as_json:
        out = {k: (v.isoformat() if isinstance(v, datetime) else
                   str(v) if isinstance(v, uuid.UUID) else v) for k, v in group.items()}
        out["recipient_count"] = out.pop("recipients")
        out["recipients"] = _recipients(rows)
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(f"message   {msg_id}  (group {group['conversation_id']}, seq {group['seq']})")
    print(f"from      {group['sender']}  client id {group['client_msg_id'] or '-'}")
    print(f"created   {group['created_at'].isoformat()}")
    print(f"receipts  delivered {group['delivered']}/{group['recipients']}, "
          f"read {group['read']}/{group['recipients']}")
    for m in rows:
        print(f"  {m.recipient:<24} {m.state:<10} attempts {m.attempts}  delivery id {m.id}")
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
        return _inspect_group(store, msg_id, args.json)
    attempts = store.attempts_of(msg_id)
    if args.json:
        out = msg.as_dict()
        out["attempts_made"] = out.pop("attempts")
        out["attempts"] = [a.as_dict() for a in attempts]
        out["recipients"] = _recipients([msg])
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
