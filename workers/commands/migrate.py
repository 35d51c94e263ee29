"""``delivery migrate``: Alembic, the only source of the schema, on the configured database.

    delivery migrate                   # upgrade to head (what deploys run)
    delivery migrate --sql             # print the upgrade's SQL instead of running it
    delivery migrate current           # the database's revision
    delivery migrate history           # every revision, newest first
    delivery migrate downgrade REV     # back to REV (``base``: empty schema)
"""

from __future__ import annotations

import argparse
import sys

from alembic import command

from delivery.migrate import alembic_config
from delivery.preflight import check_database, safe_url, sqlite_path
from delivery.settings import get_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="delivery migrate",
        description="Schema migrations (Alembic) on DELIVERY_DATABASE_URL. Without an action: "
        "upgrade to the newest revision.")
    parser.add_argument("action", nargs="?", default="upgrade",
                        choices=("upgrade", "current", "history", "downgrade"),
                        help="upgrade (default), current, history or downgrade")
    parser.add_argument("target", nargs="?", default=None,
                        help="revision for upgrade (default head) or downgrade (required; "
                        "'base' empties the schema)")
    parser.add_argument("--revision", default=None,
                        help="same as TARGET for upgrade (kept for older scripts)")
    parser.add_argument("--sql", action="store_true",
                        help="print the SQL of the upgrade or downgrade instead of running it "
                        "(downgrade needs FROM:TO)")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    url = get_settings().effective_database_url
    cfg = alembic_config(url)
    if args.action == "history":
        command.history(cfg)
        return 0
    if not args.sql:
        # One line naming the variable when the server cannot be reached (no SQL printed).
        check_database(get_settings(), migrated=False)
    if args.action == "current":
        path = sqlite_path(url)
        if path is not None and not path.exists():
            print(f"no database at {path} yet (run `delivery migrate`)")
            return 0
        command.current(cfg, verbose=False)
        return 0
    if args.action == "downgrade":
        if not args.target:
            parser.error("downgrade needs a revision (e.g. -1 or base)")
        command.downgrade(cfg, args.target, sql=args.sql)
        if not args.sql:
            print(f"database at {safe_url(url)} downgraded to {args.target}", file=sys.stderr)
        return 0
    target = args.target or args.revision or "head"
    command.upgrade(cfg, target, sql=args.sql)
    if not args.sql:
        print(f"database at {safe_url(url)} is at revision {target}")
    return 0
