"""Mail app managers about their new or worsened capacity exceptions (and, optionally, a weekly
roll-up to department heads).

Split so that the rules can be tested without a mail server or a database: ``digest`` decides and
writes the mails (pure pandas + the standard email package), ``smtp`` delivers them, ``ledger`` is
the ``notifications`` table that remembers what was delivered, and ``run.notify`` ties them together
with the database lock. No Dagster imports here: an asset, a sensor, the CLI or cron can all call
``notify``.
"""

from capacity_assets.notify.digest import (
    compose,
    compose_rollups,
    pending,
    rollup_rows,
    unaddressed,
)
from capacity_assets.notify.run import notify
from capacity_assets.notify.smtp import SendResult, SmtpSettings, SmtpUnavailable

__all__ = [
    "compose",
    "compose_rollups",
    "pending",
    "rollup_rows",
    "unaddressed",
    "notify",
    "SendResult",
    "SmtpSettings",
    "SmtpUnavailable",
]
