"""``delivery device add USER TOKEN [--platform android] | list USER | remove TOKEN``.

Works directly on the store named by DELIVERY_DATABASE_URL (no broker needed).
"""

from __future__ import annotations

import argparse
import json
import sys

from delivery.push.devices import PLATFORMS, InvalidDevice, device_dict, register_device
from delivery.push.fcm import token_ref
from delivery.runtime import get_runtime
from delivery.store.devices import devices_of, remove_device


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="delivery device", description="push device tokens")
    sub = p.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add", help="register a device token for a user")
    add.add_argument("user", help="the user the device belongs to")
    add.add_argument("token", help="the FCM registration token of the device")
    add.add_argument("--platform", default="android", help=f"one of {', '.join(PLATFORMS)}")
    ls = sub.add_parser("list", help="a user's devices (active and disabled)")
    ls.add_argument("user", help="whose devices to list")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    rm = sub.add_parser("remove", help="forget a device token")
    rm.add_argument("token", help="the FCM registration token to forget")
    return p


def _short(token: str) -> str:
    return token if len(token) <= 24 else f"{token[:10]}...{token[-10:]}"


def device_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    store = get_runtime().store
    if args.cmd == "add":
        try:
            d = register_device(args.user, args.token, args.platform)
        except InvalidDevice as exc:
            print(f"delivery device: {exc}", file=sys.stderr)
            return 2
        print(f"registered {d.platform} device {token_ref(d.token)} for {d.user_id}")
        return 0
    if args.cmd == "list":
        devices = devices_of(store, args.user)
        if args.json:
            for d in devices:
                print(json.dumps(device_dict(d)))
            return 0
        if not devices:
            print(f"no devices for {args.user}")
            return 0
        for d in devices:
            status = (f"disabled {d.disabled_at.isoformat()} ({d.disabled_reason})"
                      if d.disabled_at else "active")
            print(f"{token_ref(d.token)}  {d.platform:<7}  {status:<10}  {_short(d.token)}")
        return 0
    if remove_device(store, args.token):
        print(f"removed device {token_ref(args.token)}")
        return 0
    print(f"delivery device: no device with that token ({token_ref(args.token)})",
          file=sys.stderr)
    return 1
