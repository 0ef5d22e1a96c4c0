"""Throughput of the forecasting engines on a synthetic fleet, and what it means for 8,000 series.

    python benchmarks/engines.py --servers 100 [--months 36] [--engines prophet,challenger] [--warm]

CPU is measured with getrusage for this process plus its waited-for children, because the Prophet
engine's work happens in CmdStan child processes. The 8,000-series estimate assumes the production
layout: 2 batch processes in parallel on 2 cores, so it is bounded both by total CPU over 2 cores and
by one process's own throughput times 2, plus each batch process's start-up (imports, ~2 s).
``--warm`` runs each engine once on two series before timing it, so its figures leave out the
engine's imports and first-call costs (statsforecast's import is ~1 s of CPU); the line also gives
the CPU seconds of this process alone (``time.process_time``) beside self+children, which on a
shared machine say more than wall time.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time

import numpy as np
import pandas as pd

from capacity_assets.forecasting.engines.base import ForecastConfig
from capacity_assets.schema import RESOURCES

TARGET_SERIES, BATCH_SERIES, BATCH_PROCESSES, PROCESS_START_S = 8000, 400, 2, 2.1


def synthetic_fleet(servers: int, months: int, seed: int = 0) -> pd.DataFrame:
    """Daily utilisation: level + trend (with a mid-history slope change) + weekly + yearly + noise."""
    rng = np.random.default_rng(seed)
    ds = pd.date_range(end=pd.Timestamp("2026-11-25"), periods=int(round(months * 30.44)), freq="D")
    n = len(ds)
    t = np.arange(n)
    weekend = np.asarray(ds.dayofweek >= 5)
    doy = np.asarray(ds.dayofyear)
    frames = []
    for s in range(servers):
        for res in RESOURCES:
            level, slope = rng.uniform(5, 60), rng.normal(0.01, 0.02)
            brk = rng.integers(n // 3, n)
            trend = level + slope * t + rng.normal(0, 0.02) * np.maximum(t - brk, 0)
            weekly = rng.uniform(0, 8) * np.where(weekend, -1.0, 0.4)
            yearly = rng.uniform(0, 6) * np.sin(
                2 * np.pi * doy / 365.25 + rng.uniform(0, 2 * np.pi)
            )
            y = np.clip(trend + weekly + yearly + rng.normal(0, rng.uniform(0.5, 5), n), 0, 100)
            frames.append(
                pd.DataFrame({"server_id": f"srv{s:05d}", "resource": res, "ds": ds, "y": y})
            )
    return pd.concat(frames, ignore_index=True)


def fleet(servers: int, months: int, seed: int) -> tuple[pd.DataFrame, str]:
    """The demo generator's fleet when it is usable, else the synthetic one."""
    try:
        from capacity_assets.demo.fleet import generate_fleet

        metrics, _ = generate_fleet(servers, months, seed)
        metrics = metrics.rename(columns={"timestamp": "ds", "utilization_pct": "y"})
        history = metrics[["server_id", "resource", "ds", "y"]].copy()
        history["ds"] = pd.to_datetime(history["ds"]).dt.normalize()
        history = history.groupby(["server_id", "resource", "ds"], as_index=False)["y"].mean()
        history[["server_id", "resource"]] = history[["server_id", "resource"]].astype(str)
        return history, "capacity_assets.demo.fleet.generate_fleet"
    except Exception as exc:  # the demo generator is optional here
        print(f"demo generator not usable ({type(exc).__name__}: {exc}); using synthetic series")
        return synthetic_fleet(servers, months, seed), "synthetic (benchmarks/engines.py)"


def cpu_seconds() -> float:
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=100)
    ap.add_argument("--months", type=int, default=36)
    ap.add_argument("--engines", default="prophet,challenger")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="override an engine's WORKERS")
    ap.add_argument("--warm", action="store_true", help="run each engine once before timing it")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    from capacity_assets.forecasting.engines.registry import engine, run

    history, source = fleet(args.servers, args.months, args.seed)
    n_series = history.groupby(["server_id", "resource"]).ngroups
    print(
        f"fleet: {n_series} series x {history.groupby(['server_id', 'resource']).size().median():.0f} days from {source}"
    )
    cfg = ForecastConfig(seed=args.seed)
    for name in [e.strip() for e in args.engines.split(",") if e.strip()]:
        mod = engine(name)
        if args.workers and hasattr(mod, "WORKERS"):
            mod.WORKERS = args.workers
        if args.warm:
            first = history[["server_id", "resource"]].drop_duplicates().head(2)
            run(name, history.merge(first), cfg, log=logging.getLogger("bench.warm"))
        cpu0, own0, wall0 = cpu_seconds(), time.process_time(), time.perf_counter()
        out = run(name, history, cfg, log=logging.getLogger(f"bench.{name}"))
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        own = time.process_time() - own0
        fallbacks = out.loc[
            out["model"].str.endswith(":fallback"), ["server_id", "resource"]
        ].drop_duplicates()
        cpu_ms = 1000 * cpu / n_series
        est = max(
            TARGET_SERIES * cpu / n_series / BATCH_PROCESSES,
            TARGET_SERIES * wall / n_series / BATCH_PROCESSES,
        )
        est += PROCESS_START_S * TARGET_SERIES / BATCH_SERIES / BATCH_PROCESSES
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"{name}: {n_series} series, {len(fallbacks)} fallbacks, wall {wall:.1f} s, "
            f"{n_series / wall:.1f} series/s, CPU {cpu_ms:.0f} ms/series (self+children), "
            f"CPU {cpu:.1f} s (self+children) / {own:.1f} s (process_time), "
            f"peak RSS self {rss:.0f} MB / largest child {kids:.0f} MB (a forked child counts its parent's pages), "
            f"8,000 series with {BATCH_PROCESSES} batch processes: ~{est / 60:.1f} min"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
