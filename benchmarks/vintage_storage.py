"""How big does forecast_history get? 26 weekly vintages of a fleet, in the compact form, in DuckDB.

Builds ``--vintages`` weekly golden records (N servers x 4 resources x ``--days`` future days;
smooth synthetic forecasts with weekly seasonality and widening bands, as the engines produce) in
the FORECAST_HISTORY contract and sort order, and writes them into a table of a temporary DuckDB
file the way the IO manager publishes a batch (one insert of the batch's whole history; DATE
columns as DATE, strings as VARCHAR). Prints the file size, bytes per row and, below 2,000 servers,
the linear extrapolation to 2,000. ``--churn W`` then replays W weekly runs of every batch as the
IO manager does them (stage the new whole history, delete the batch, insert it, clear the stage)
to show the steady-state size, freed blocks included (they are reused, the file stays bounded).
``--compare`` also measures unrounded float32 and float64 forecasts. Also prints what one batch's
history costs in pandas when loaded with ``fetchdf`` (what the IO manager does today) and through
Arrow with deduplicated strings.

    .venv/bin/python benchmarks/vintage_storage.py [--servers 2000] [--batches 20] [--churn 4] [--compare]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import psutil

from capacity_assets.track.contracts import FORECAST_HISTORY
from capacity_assets.track.vintages import FORECAST_DECIMALS

RESOURCES = ("cpu", "memory", "disk", "network")
FULL_FLEET = 2000
DDL = {"string": "VARCHAR", "datetime64[ns]": "DATE", "float32": "FLOAT", "float64": "DOUBLE"}
CASTS = (
    "select * replace (cast(vintage as date) as vintage, cast(ds as date) as ds, batch::varchar as batch, "
    "server_id::varchar as server_id, resource::varchar as resource, model::varchar as model) from obj"
)


def batch_history(
    batch: str, servers: np.ndarray, vintages: list[pd.Timestamp], days: int, rng, decimals, dtype
):
    """A batch's history: every vintage of its series, sorted by vintage, series, day (as stored)."""
    parts = []
    for vint in vintages:
        n = len(servers) * len(RESOURCES)
        h = np.arange(1, days + 1, dtype=float)
        level, trend = rng.uniform(5, 85, n)[:, None], rng.normal(0, 0.05, n)[:, None]
        amp, phase = rng.uniform(0, 6, n)[:, None], rng.uniform(0, 7, n)[:, None]
        yhat = np.clip(level + trend * h + amp * np.sin(2 * np.pi * (h + phase) / 7), 0, 100)
        width = rng.uniform(1, 6, n)[:, None] * np.sqrt(h / 7 + 1)
        arrays = [yhat, np.clip(yhat - width, 0, 100), np.clip(yhat + width, 0, 100)]
        if decimals is not None:
            arrays = [np.round(a, decimals) for a in arrays]
        sid = np.repeat(servers, len(RESOURCES))
        res = np.tile(np.arange(len(RESOURCES)), len(servers))
        models = rng.choice(3, n, p=[0.6, 0.38, 0.02])
        parts.append(
            pd.DataFrame(
                {
                    "batch": batch,
                    "vintage": vint,
                    "run_id": f"{vint:%Y%m%d}-0000-0000-0000-000000000000",
                    "server_id": pd.Categorical.from_codes(
                        np.repeat(sid, days),
                        [f"srv-{i:05d}.prod.example.com" for i in range(sid.max() + 1)],
                    ),
                    "resource": pd.Categorical.from_codes(np.repeat(res, days), list(RESOURCES)),
                    "ds": np.tile(pd.date_range(vint, periods=days).values, n),
                    **{
                        c: a.ravel().astype(dtype)
                        for c, a in zip(("yhat", "yhat_lower", "yhat_upper"), arrays)
                    },
                    "model": pd.Categorical.from_codes(
                        np.repeat(models, days), ["prophet", "challenger", "prophet:fallback"]
                    ),
                    "threshold": np.repeat(
                        np.where(rng.random(n) < 0.05, 90.0, 95.0), days
                    ),  # a few per-server overrides
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def measure(args, decimals, dtype, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    tmp = Path(tempfile.mkdtemp(prefix="vintage_storage_"))
    db = tmp / "history.duckdb"
    types = {**FORECAST_HISTORY, **{c: dtype for c in ("yhat", "yhat_lower", "yhat_upper")}}
    ddl = ", ".join(f"{c} {DDL[t]}" for c, t in types.items())
    conn = duckdb.connect(str(db))
    conn.execute(f"create table forecast_history ({ddl})")
    conn.execute("create schema staging")
    conn.execute(f"create table staging.forecast_history ({ddl})")
    first = pd.Timestamp("2026-06-01")
    vintages = [first + pd.Timedelta(weeks=v) for v in range(args.vintages)]
    servers = np.arange(args.servers)
    keys = [f"batch_{b:02d}" for b in range(args.batches)]
    started, rows = time.perf_counter(), 0
    for b, key in enumerate(keys):  # one insert per batch, as a publish does
        df = batch_history(
            key, servers[servers % args.batches == b], vintages, args.days, rng, decimals, dtype
        )
        conn.register("obj", df)
        conn.execute(f"insert into forecast_history {CASTS}")
        conn.unregister("obj")
        rows += len(df)
    conn.execute("checkpoint")
    out = {"rows": rows, "size": os.path.getsize(db), "write_s": time.perf_counter() - started}
    for w in range(
        args.churn
    ):  # a weekly run per batch: newest vintage in, oldest out, batch replaced whole
        newest = first + pd.Timedelta(weeks=args.vintages + w)
        oldest_kept = newest - pd.Timedelta(weeks=args.vintages - 1)
        for b, key in enumerate(keys):
            df = batch_history(
                key, servers[servers % args.batches == b], [newest], args.days, rng, decimals, dtype
            )
            conn.register("obj", df)
            conn.execute("begin transaction")
            conn.execute(
                "insert into staging.forecast_history select * from forecast_history "
                "where batch = ? and vintage >= ?",
                [key, oldest_kept.date()],
            )
            conn.execute(f"insert into staging.forecast_history {CASTS}")
            conn.execute("delete from forecast_history where batch = ?", [key])
            conn.execute(
                "insert into forecast_history select * from staging.forecast_history where batch = ?",
                [key],
            )
            conn.execute("delete from staging.forecast_history where batch = ?", [key])
            conn.execute("commit")
            conn.execute("checkpoint")  # the IO manager closes its connection after each publish
            conn.unregister("obj")
        out.setdefault("weekly", []).append(os.path.getsize(db))
    out["churned"] = os.path.getsize(db) if args.churn else None
    query = "select * from forecast_history where batch = 'batch_00'"
    before = rss_mb()
    one = conn.execute(query).fetchdf()
    out["fetchdf_mb"], out["one_rows"] = rss_mb() - before, len(one)
    del one
    before = rss_mb()
    one = conn.sql(query).to_arrow_table().to_pandas(date_as_object=False)
    out["arrow_mb"] = rss_mb() - before
    del one
    conn.close()
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=FULL_FLEET)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--vintages", type=int, default=26)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument(
        "--churn",
        type=int,
        default=0,
        help="weekly whole-batch replacements to replay after the load",
    )
    ap.add_argument(
        "--compare", action="store_true", help="also measure unrounded float32 and float64"
    )
    args = ap.parse_args(argv)
    forms = [
        (
            f"compact (chosen): float32 rounded to {FORECAST_DECIMALS} decimals",
            FORECAST_DECIMALS,
            "float32",
        )
    ]
    if args.compare:
        forms += [("float32, unrounded", None, "float32"), ("float64, unrounded", None, "float64")]
    scale = FULL_FLEET / args.servers
    print(
        f"{args.servers:,} servers x {len(RESOURCES)} resources x {args.days} days x {args.vintages} vintages, "
        f"{args.batches} batches"
    )
    for name, decimals, dtype in forms:
        m = measure(args, decimals, dtype)
        mb = m["size"] / 2**20
        print(f"\n[{name}]")
        print(f"  rows                 {m['rows']:,}")
        print(
            f"  DuckDB file          {mb:,.1f} MB ({m['size'] / m['rows']:.2f} bytes/row), "
            f"written in {m['write_s']:.1f} s"
        )
        if scale != 1:
            print(f"  extrapolated to {FULL_FLEET:,} servers: {mb * scale:,.0f} MB")
        if m["churned"] is not None:
            churned = m["churned"] / 2**20
            print(
                f"  after {args.churn} weekly run(s) replacing every batch: {churned:,.1f} MB"
                + (f" (extrapolated: {churned * scale:,.0f} MB)" if scale != 1 else "")
            )
            print(
                "  size after each week: "
                + ", ".join(f"{s / 2**20:,.1f}" for s in m["weekly"])
                + " MB"
            )
        print(
            f"  one batch ({m['one_rows']:,} rows) loaded into pandas: fetchdf +{m['fetchdf_mb']:,.0f} MB RSS, "
            f"Arrow with shared strings +{m['arrow_mb']:,.0f} MB"
        )


if __name__ == "__main__":
    main()
