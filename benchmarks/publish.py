"""One batch's publish on a filled store: statements, round trips and seconds, DuckDB or PostgreSQL.

    python benchmarks/publish.py --db data/capacity.duckdb [--batch batch_05] [--repeat 5]
    python benchmarks/publish.py --db postgresql://user@host:port/dbname

The store must hold a published run (``capacity run`` or ``capacity demo`` first). The batch's
published rows are staged again under a run id of the benchmark's own and published, ``--repeat``
times; nothing changes in the published tables (the same rows replace themselves). Prints the
median publish time, the statements it ran and the slowest statements of the last repeat.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

from capacity_assets.store import db, staging
from capacity_assets.store.db import fetch_frame
from capacity_assets.store.postgres import PgConnection


class Timed:
    """``conn`` with every statement timed (DuckDB's connection cannot take another ``execute``)."""

    def __init__(self, conn, spent, counts):
        self.conn, self.plain, self.spent, self.counts = conn, conn.execute, spent, counts

    def execute(self, sql, params=None):
        t = time.perf_counter()
        out = self.plain(sql, params) if params is not None else self.plain(sql)
        key = " ".join(sql.split()[:3])
        self.spent[key] += time.perf_counter() - t
        self.counts[key] += 1
        return out

    def executemany(self, sql, rows):
        return self.conn.executemany(sql, rows)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def stage_again(conn, batch: str, run_id: str) -> dict[str, int]:
    tables = sorted(db.tables_with(conn, "main", "batch"))
    rows = {}
    for t in tables:
        frame = fetch_frame(conn, f'select * from main."{t}" where batch = ?', [batch])
        frame = frame.astype({c: "string" for c in frame.columns if frame[c].dtype == object})
        conn.register("obj", frame)
        staging.stage(conn, t, "select * from obj", run_id, [batch])
        conn.unregister("obj")
        rows[t] = len(frame)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", required=True)
    p.add_argument("--batch", default="batch_05")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    db.prepare(args.db)
    seconds, spent, counts = [], collections.defaultdict(float), collections.Counter()
    for i in range(args.repeat):
        conn = db.connect(args.db)
        rows = stage_again(conn, args.batch, f"bench-publish-{i}")
        spent.clear()
        counts.clear()
        timed = Timed(conn, spent, counts)
        if isinstance(conn, PgConnection):  # the store tells the two stores apart by the class
            conn.execute, timed = timed.execute, conn
        t0 = time.perf_counter()
        timed.execute("begin transaction")
        if isinstance(conn, PgConnection):
            conn.lock_batches([args.batch])
        staging.publish(timed, f"bench-publish-{i}", args.batch)
        timed.execute("commit")
        seconds.append(time.perf_counter() - t0)
        conn.close()
    print(
        f"store: {db.Database(args.db)}; {args.batch}: {sum(rows.values()):,} rows in {len(rows)} tables"
    )
    print(
        f"publish: median {statistics.median(seconds) * 1000:.0f} ms over {args.repeat} "
        f"(min {min(seconds) * 1000:.0f}, max {max(seconds) * 1000:.0f}); "
        f"{sum(counts.values())} statements"
    )
    for key, s in sorted(spent.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {s * 1000:7.1f} ms  {counts[key]:3d} x  {key}")


if __name__ == "__main__":
    main()
