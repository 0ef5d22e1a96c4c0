"""``python -m capacity_assets.notify``: one notification run from the environment, for cron or a
scheduler until the ``capacity`` command has a subcommand for it. Exit 0 when every message went
out, 1 when some failed or the server was unreachable, 2 for configuration errors."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from capacity_assets.config import load, smtp_settings
from capacity_assets.notify.run import NothingToRead, NotifyError, notify
from capacity_assets.notify.smtp import SmtpUnavailable
from capacity_assets.store.db import Database


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m capacity_assets.notify",
        description="Mail each app manager their new or worsened capacity exceptions (SMTP settings from "
        "CAPACITY_SMTP_*; see the README, 'Digests for app managers').",
    )
    p.add_argument(
        "--db",
        default=None,
        help="the DuckDB file (default: CAPACITY_DB or data/capacity.duckdb)",
    )
    p.add_argument(
        "--dashboard-url",
        default=None,
        help="link each server to the dashboard's deep dive (default: CAPACITY_DASHBOARD_URL)",
    )
    p.add_argument(
        "--rollup", action="store_true", help="also send department heads their weekly roll-up"
    )
    p.add_argument(
        "--dry-run",
        metavar="DIR",
        help="write .eml files into DIR instead of sending; records nothing",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        settings = load()
        smtp = smtp_settings()
    except ValueError as e:
        print(f"capacity notify: error: {e}", file=sys.stderr)
        return 2
    if not args.dry_run and not smtp.configured:
        print(
            "capacity notify: error: set CAPACITY_SMTP_HOST (or use --dry-run DIR)", file=sys.stderr
        )
        return 2
    try:
        summary = notify(
            Database(args.db, settings.lock_timeout) if args.db else settings.database,
            smtp,
            settings.dashboard_url if args.dashboard_url is None else args.dashboard_url,
            dry_run=bool(args.dry_run),
            out_dir=args.dry_run,
            rollup=args.rollup,
        )
    except (SmtpUnavailable, NotifyError) as e:
        print(f"capacity notify: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, NothingToRead) else 1
    print(json.dumps(summary, indent=2, default=str))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
