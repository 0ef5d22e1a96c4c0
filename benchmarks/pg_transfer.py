"""How to move a batch's rows between pandas and PostgreSQL: ADBC's driver against psycopg 3.

    python benchmarks/pg_transfer.py --url postgresql://postgres@127.0.0.1:5432/bench [--rows 1000000]

Writes a results-shaped frame (batch, server_id, resource, ds, y, yhat, lower, upper, split) and reads
it back, each way three times, and prints the best seconds. ADBC moves Arrow both ways over binary
COPY; psycopg 3 writes with binary COPY row by row from Python and reads rows as Python tuples.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import pyarrow as pa


def frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    i = np.arange(rows) // 300  # series index: 300 days each
    return pd.DataFrame(
        {
            "batch": pd.Series(i % 20).map("batch_{:02d}".format),
            "server_id": pd.Series(i // 4).map("srv-{:05d}".format),
            "resource": np.array(["cpu", "memory", "disk", "network"])[i % 4],
            "ds": pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(rows) % 300, unit="D"),
            "y": rng.random(rows) * 100,
            "yhat": rng.random(rows) * 100,
            "lower": rng.random(rows) * 100,
            "upper": rng.random(rows) * 100,
            "split": np.where(rng.random(rows) > 0.5, "backtest", "future"),
        }
    )


def best(fn, n: int = 3) -> float:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    import adbc_driver_postgresql.dbapi as adbc
    import psycopg

    df = frame(args.rows)
    table = pa.Table.from_pandas(df, preserve_index=False)
    ddl = (
        "create table bench_t (batch text, server_id text, resource text, ds timestamp, y float8, "
        "yhat float8, lower float8, upper float8, split text)"
    )

    conn = adbc.connect(args.url, autocommit=True)
    cur = conn.cursor()

    def adbc_write():
        cur.execute("drop table if exists bench_t")
        cur.execute(ddl)
        cur.adbc_ingest("bench_t", table, mode="append")

    def adbc_read():
        cur.execute("select * from bench_t")
        cur.fetch_arrow_table().to_pandas()

    with psycopg.connect(args.url, autocommit=True) as pconn:

        def psy_write():
            pconn.execute("drop table if exists bench_t")
            pconn.execute(ddl)
            with pconn.cursor().copy("copy bench_t from stdin (format binary)") as cp:
                cp.set_types(
                    [
                        "text",
                        "text",
                        "text",
                        "timestamp",
                        "float8",
                        "float8",
                        "float8",
                        "float8",
                        "text",
                    ]
                )
                for row in df.itertuples(index=False):
                    cp.write_row(row)

        def psy_read():
            rows = pconn.execute("select * from bench_t").fetchall()
            pd.DataFrame(rows, columns=list(df.columns))

        figures = {
            "adbc write": best(adbc_write),
            "adbc read": best(adbc_read),
            "psycopg write (binary COPY)": best(psy_write),
            "psycopg read": best(psy_read),
        }
    cur.execute("drop table if exists bench_t")
    print(f"{args.rows:,} rows")
    for k, v in figures.items():
        print(f"  {k:30s} {v:6.2f} s  ({args.rows / v / 1e6:.2f} M rows/s)")


if __name__ == "__main__":
    main()
