"""Executive dashboard: where the fleet runs out of capacity, how far to trust it, and one server in detail.

Run with ``capacity dashboard``. It only reads (``data`` → ``store.db.reading``: short shared locks
on a DuckDB file, one read-only snapshot on PostgreSQL, no connection kept across reruns) so it can
stay open while runs write. When a run holds the database longer than a view is willing to wait,
the view shows the data it loaded last, with a note, instead of an error (``last_good``). Only the
open tab runs its queries (``st.tabs(on_change="rerun")``); each tab is a module of ``views``.
Streamlit runs this file as a script, so it imports the package by absolute name and calls
``main()`` itself.
"""

from __future__ import annotations

import dataclasses

import streamlit as st

from capacity_assets import config
from capacity_assets.dashboard import data, header
from capacity_assets.dashboard.last_good import Loader, NotLoaded
from capacity_assets.dashboard.views import deep_dive, plan, pools, risk, tournament, track, whatif
from capacity_assets.dashboard.widgets import not_loaded_note
from capacity_assets.store.db import Database, StorageError, is_postgres
from capacity_assets.store.postgres import StorageError as ServerError
from capacity_assets.store.postgres import redact

VIEWS = (
    "Risk heatmap",
    "Capacity plan",
    "What if",
    "Pools",
    "Track record",
    "Tournament summary",
    "Deep dive",
)
SHOWN_SETTINGS = ("threshold", "risk_days", "mape_warn")

st.set_page_config(page_title="Capacity outlook", page_icon="📈", layout="wide")


def refreshing_note(busy: bool) -> None:
    """Said above the views when one showed older data: numbers that do not move after a run would
    otherwise look current."""
    if busy:
        st.info(
            "⏳ The pipeline is refreshing the data; showing the last loaded data. "
            "Reload the page in a minute for the new numbers.",
            icon=None,
        )


def main() -> None:
    try:
        settings = config.load()
    except config.ConfigError as e:
        st.error(f"Configuration error: {redact(str(e))}")  # CAPACITY_DB may carry a password
        return
    db = Database(settings.db, settings.dashboard_lock_timeout)  # reads as itself, no password
    try:
        ver = data.version(db)  # PostgreSQL: a query, so the server may be down or refuse us
    except (StorageError, ServerError) as e:  # ServerError: cannot connect (said without password)
        return header.no_data_page(db, str(e))
    if ver is None:
        return header.no_data_page(
            db,
            f"No batch has been published to `{db}` yet (a first run may still be in progress)."
            if is_postgres(db)
            else f"There is no database at `{db}` yet.",
        )
    loader = Loader(db, ver)
    try:
        present = loader.load("tables", data.tables)
    except NotLoaded:
        st.title("Capacity outlook")
        return not_loaded_note()
    except (StorageError, ServerError) as e:
        return header.no_data_page(db, str(e))
    missing = [t for t in data.REQUIRED if t not in present]
    if missing:
        return header.no_data_page(
            db,
            f"`{db}` has no {', '.join(missing)} table yet (a first run may still be in progress).",
        )
    try:
        ov = loader.load(
            "overview",
            data.overview,
            "skipped_series" in present,
            "batch_ledger" in present,
            "forecast_history" in present,
        )
    except NotLoaded:
        st.title("Capacity outlook")
        return not_loaded_note()
    if ov.series == 0:
        return header.no_data_page(db, f"`{db}` has the tables but no forecast in them yet.")
    try:
        used = loader.load("run_settings", data.run_settings) if "batch_ledger" in present else {}
    except NotLoaded:
        used = {}
    shown = {k: used[k] for k in SHOWN_SETTINGS if k in used and not isinstance(used[k], list)}
    mixed = {k: used[k] for k in SHOWN_SETTINGS if isinstance(used.get(k), list)}
    settings = dataclasses.replace(
        settings, **shown
    )  # what the results were made with, not this shell's
    header.render(ov, settings, mixed)
    note = st.empty()
    linked = st.query_params.get("server")  # the digests link each server here: ?server=<id>
    if linked and st.session_state.get("_linked_server") != linked:
        st.session_state["_linked_server"] = linked
        deep_dive.open_in_deep_dive(linked)
    risk_tab, plan_tab, whatif_tab, pools_tab, track_tab, tournament_tab, deep_tab = st.tabs(
        list(VIEWS), key="view", on_change="rerun"
    )
    if risk_tab.open:
        with risk_tab:
            risk.render(loader, settings)
    if plan_tab.open:
        with plan_tab:
            plan.render(loader, settings, present)
    if whatif_tab.open:
        with whatif_tab:
            whatif.render(loader, settings, present)
    if pools_tab.open:
        with pools_tab:
            pools.render(loader, settings, present)
    if track_tab.open:
        with track_tab:
            track.render(loader, settings, present, ov.vintages)
    if tournament_tab.open:
        with tournament_tab:
            tournament.render(loader, settings, present)
    if deep_tab.open:
        with deep_tab:
            deep_dive.render(loader, settings, present)
    with note:
        refreshing_note(loader.busy)


main()
