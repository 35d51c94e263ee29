"""``delivery conversation``: create a group conversation, add or remove members, show one."""

from __future__ import annotations

import argparse
import json
import sys

from delivery.api import (
    ConversationError,
    SendNotAccepted,
    add_members,
    create_conversation,
    remove_members,
)
from delivery.runtime import get_runtime


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="delivery conversation",
                                     description="Group conversations and their members.")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create a group conversation")
    create.add_argument("id", help="the conversation's id (at most 128 characters)")
    create.add_argument("--members", required=True,
                        help="comma-separated user ids (DELIVERY_MAX_CONVERSATION_MEMBERS)")
    for name, text in (("add", "add members (they get the messages sent from now on)"),
                       ("remove", "remove members (they get no message sent from now on)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("id", help="the conversation's id")
        p.add_argument("users", nargs="+", help="user ids")
    show = sub.add_parser("show", help="a conversation's last seq and members")
    show.add_argument("id", help="the conversation's id")
    show.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.action == "create":
            members = [m.strip() for m in args.members.split(",") if m.strip()]
            created = create_conversation(args.id, members)
            print(f"{args.id}: {'created' if created else 'exists'} with {len(members)} members")
        elif args.action == "add":
            added = add_members(args.id, args.users)
            print(f"{args.id}: added {', '.join(added) or 'nobody (all were members)'}")
        elif args.action == "remove":
            gone = remove_members(args.id, args.users)
            print(f"{args.id}: removed {', '.join(gone) or 'nobody (none was a member)'}")
        else:
            return _show(args.id, args.json)
    except (ConversationError, SendNotAccepted) as exc:
        print(f"delivery conversation: {exc}", file=sys.stderr)
        return 2
    return 0


def _show(conv_id: str, as_json: bool) -> int:
    store = get_runtime().store
    conv = store.conversation(conv_id)
    if conv is None:
        print(f"delivery conversation: unknown conversation {conv_id!r}", file=sys.stderr)
        return 1
    members = store.members_of(conv_id, current=False)
    if as_json:
        print(json.dumps({
            "id": conv.id, "kind": conv.kind, "last_seq": conv.last_seq,
            "created_at": conv.created_at.isoformat(),
            "members": [{"user": m.user_id, "joined_seq": m.joined_seq, "left_seq": m.left_seq,
                         "read_seq": m.read_seq} for m in members],
        }, indent=2))
        return 0
    print(f"conversation {conv.id} ({conv.kind}), last seq {conv.last_seq}")
    for m in members:
        span = f"seq > {m.joined_seq}" + ("" if m.left_seq is None else f", <= {m.left_seq}")
        print(f"  {m.user_id:<24} {span:<24} read up to {m.read_seq}")
    return 0
