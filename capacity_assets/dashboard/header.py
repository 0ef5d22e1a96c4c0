"""The top of every page: what the numbers are, how fresh, and with which settings they were made.

Also the page shown instead when there is nothing to read yet, which says how to get data.
"""

from __future__ import annotations

import streamlit as st

from capacity_assets.config import CapacitySettings
from capacity_assets.dashboard import data
from capacity_assets.schema import escape_markdown
from capacity_assets.store.postgres import redact


def render(ov: data.Overview, settings: CapacitySettings, mixed: dict) -> None:
    """The settings shown are the published runs' (``mixed``: those the batches disagree on), not
    this shell's: a viewer started with another CAPACITY_THRESHOLD must not relabel the results.
    The database is named without a PostgreSQL URL's password (``settings.db`` is the whole URL)."""
    st.title("Capacity outlook")
    st.caption(
        f"Threshold {settings.threshold:g} % · risk window {settings.risk_days} days · "
        f"MAPE warning {settings.mape_warn:g} % (as the published runs used them) · database {redact(settings.db)}"
    )
    if mixed:
        st.warning(
            "Batches were computed with different settings: "
            + "; ".join(
                f"{k} {', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in vals)}"
                for k, vals in mixed.items()
            )
            + ". The next full `capacity run` brings them in line."
        )
    age = ov.age_days()
    cols = st.columns(6)
    cols[0].metric(
        "Forecast generated",
        f"{ov.generated_at:%Y-%m-%d}" if ov.generated_at is not None else "–",
        help=f"newest generated_at: {ov.generated_at}",
    )
    cols[1].metric(
        "Forecast starts",
        f"{ov.forecast_start:%Y-%m-%d}" if ov.forecast_start is not None else "–",
        help=f"first forecast day of most series; horizon until {ov.forecast_end:%Y-%m-%d}"
        if ov.forecast_end is not None
        else None,
    )
    cols[2].metric(
        "Servers",
        f"{ov.servers:,}",
        help="every server of the published batches, forecast or skipped",
    )
    cols[3].metric(
        "Series",
        f"{ov.series:,}",
        help=f"server × resource with a forecast; {ov.skipped:,} skipped (too short, or no recent data)",
    )
    cols[4].metric("Batches", f"{ov.batches:,}")
    cols[5].metric(
        f"At risk ≤ {settings.risk_days} days",
        f"{ov.critical + ov.warning:,} series",
        delta=f"{ov.critical:,} critical",
        delta_color="red" if ov.critical else "off",
        delta_arrow="off",
        help=f"{ov.servers_at_risk:,} servers; upper bound reaches the series' threshold",
    )
    kept = f" · {vintages_kept(ov.vintages)} (see Track record)."
    if age is None:
        st.warning("No forecast date found." + kept)
    elif ov.fresh():
        st.success(
            f"Data is fresh: the oldest batch was published {_ago(age)} (within {data.FRESH_DAYS} days)"
            + kept
        )
    else:
        st.warning(
            f"Data is stale: the oldest batch ({escape_markdown(ov.oldest_batch or '?')}) was published "
            f"{_ago(age)}, more than {data.FRESH_DAYS} days ago. The weekly refresh may have failed for "
            "it; check `capacity ui`" + kept
        )


def vintages_kept(n: int) -> str:
    """How much track record there is to look at, said in the freshness line."""
    if n == 0:
        return "no weekly vintage kept yet"
    return f"{n:,} weekly vintage{'s' if n != 1 else ''} kept"


def _ago(days: float) -> str:
    if days < 1:
        return f"{max(days * 24, 0):.0f} h ago"
    return f"{days:.0f} day{'s' if round(days) != 1 else ''} ago"


def no_data_page(db: str, detail: str) -> None:
    """A first visitor, before any run, learns how to get data instead of seeing an empty page."""
    st.title("Capacity outlook")
    st.info(f"**No forecasts to show yet.** {detail}")
    st.markdown(
        "The dashboard reads the tables the pipeline writes. To produce them:\n\n"
        "* try it on a synthetic fleet (about a minute and a half for 200 servers on 2 cores):\n\n"
        "  ```\n  capacity demo\n  ```\n"
        "* or forecast your own metrics:\n\n"
        "  ```\n  capacity run --metrics 'metrics/*.parquet' --hierarchy hierarchy.csv\n  ```\n\n"
        f"then reload this page. The dashboard reads `{db}` (set `CAPACITY_DB` or "
        "`capacity dashboard --db` to point it elsewhere)."
    )
