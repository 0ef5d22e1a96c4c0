"""What the pools need from the store, and where they go: the published golden record of the
servers that have a pool (and each scenario's), read in one snapshot; pool_outlook and pool_demand
replaced whole in one transaction.

Pools span batches, so they are computed from everything published, not from one run's batches.
The asset holds ``store.db.exclusive(db, "pools")`` from reading to writing, so of two runs
finishing at once the later reader writes last; a reader never sees one table of one run with the
other of another.
"""

from __future__ import annotations

import pandas as pd

from capacity_assets.risk.pools import POOL
from capacity_assets.schema import DATE_COLUMNS, HIERARCHY, POOL_DEMAND, POOL_OUTLOOK, conform
from capacity_assets.schema import quote_ident as q
from capacity_assets.store.db import columns, reading, replace_table, table_names, writing

_DEMAND = ["server_id", "resource", "ds", "yhat", "yhat_upper", "demand", "demand_upper"]
_RECORDS = {"forecasts": ("forecasts", []), "scenarios": ("scenario_forecasts", ["scenario"])}


def read_pooled(db: str) -> dict[str, pd.DataFrame]:
    """{hierarchy, forecasts, scenarios}: the published hierarchy, and the golden record and
    scenario_forecasts rows (with ``scenario``) of the servers whose pool is not blank; the two
    record frames are empty without a pool column (or a table not written yet)."""
    with reading(db) as conn:
        have = table_names(conn, "main")
        pool = None
        if "business_hierarchy" in have:
            hierarchy = conn.execute("select * from main.business_hierarchy").fetchdf()
            names = [n for n, _ in columns(conn, "main", "business_hierarchy")]
            pool = next((n for n in names if str(n).strip().lower() == POOL), None)
        else:
            hierarchy = pd.DataFrame({c: [] for c in HIERARCHY})
        frames = {"hierarchy": conform(hierarchy, HIERARCHY, extra=True)}
        for key, (table, first) in _RECORDS.items():
            wanted = [*first, *_DEMAND]
            if pool is None or table not in have:
                frames[key] = pd.DataFrame({c: [] for c in wanted})
                continue
            frames[key] = conn.execute(
                f"select {', '.join('f.' + c for c in wanted)} from main.{table} f "
                "join main.business_hierarchy h on h.server_id = f.server_id "
                f"where nullif(trim(cast(h.{q(pool)} as varchar)), '') is not null"
            ).fetchdf()
    return frames


def write_pools(db: str, outlook: pd.DataFrame, daily: pd.DataFrame) -> None:
    """Replace pool_outlook and pool_demand with ``outlook`` and ``daily``, together."""
    with writing(db) as conn:
        for name, frame, contract in (
            ("pool_outlook", outlook, POOL_OUTLOOK),
            ("pool_demand", daily, POOL_DEMAND),
        ):
            frame = conform(frame, contract)
            listed = ", ".join(
                f"cast({q(c)} as date) as {q(c)}" if c in DATE_COLUMNS else q(c) for c in frame
            )
            conn.execute("select 1").fetchall()  # DuckDB refuses register with results pending
            conn.register("pools_frame", frame)
            replace_table(conn, f"main.{name}", f"select {listed} from pools_frame")
            conn.unregister("pools_frame")
