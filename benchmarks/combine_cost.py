"""CPU of what every batch computes after the fits: the combination and the engines' calibration.

    .venv/bin/python benchmarks/combine_cost.py [--servers 100] [--repeat 5] [--pythonpath DIR]

One batch of the demo fleet (``--servers`` servers, 36 months: 100 is a batch of a 2,000-server
fleet in 20 batches). The three engines' results are fitted once and cached under benchmarks/out/;
then, best of ``--repeat`` in CPU seconds of this process: ``combination.combine`` (the members'
backtest scaling, the mixture quantiles, its own calibration), ``combination.pool_bounds`` alone,
and ``registry.finish`` of Prophet's rows (calibration, clipping, ``conform``). ``--pythonpath``
imports ``capacity_assets`` from DIR instead (an older version, ``git archive REV capacity_assets |
tar -x -C DIR``) on the same cached results, for a before/after on one machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pythonpath", default="")
    args = ap.parse_args()
    sys.path[:0] = [args.pythonpath or os.path.dirname(HERE), HERE]
    logging.disable(logging.WARNING)
    import numpy as np

    from capacity_assets.forecasting import combination
    from capacity_assets.forecasting.engines import registry
    from capacity_assets.forecasting.engines.base import ForecastConfig

    cfg = ForecastConfig()
    import accuracy as A  # after capacity_assets: it puts this checkout first on sys.path

    path = os.path.join(HERE, "out", f"combine_cost_{args.servers}.pkl")
    if os.path.exists(path):
        with open(path, "rb") as f:
            data, res, raw = pickle.load(f)
    else:
        data = A.load_family("demo", args.servers, 0, cfg)
        res = {n: registry.run(n, data["history"], cfg) for n in ("prophet", "challenger", "ets")}
        raw = res["prophet"][res["prophet"]["model"] == "prophet"].drop(
            columns=["model", "demand", "demand_upper"]
        )
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump((data, res, raw), f)
    act = data["actuals"]
    combined = combination.combine(res, act, cfg)
    wide = combined.pivot_table(index=["server_id", "resource", "split", "ds"], values="yhat")
    rng = np.random.default_rng(0)
    c = rng.uniform(0, 100, (len(wide), 3))
    lo, hi = c - rng.exponential(3, c.shape), c + rng.exponential(3, c.shape)

    def best(fn) -> float:
        times = []
        for _ in range(args.repeat):
            t = time.process_time()
            fn()
            times.append(time.process_time() - t)
        return min(times)

    n = data["history"].groupby(["server_id", "resource"]).ngroups
    print(f"capacity_assets from {combination.__file__}; {n} series, {len(combined)} rows")
    for label, fn in (
        ("combination.combine", lambda: combination.combine(res, act, cfg)),
        (
            "  pool_bounds alone (members far apart)",
            lambda: combination.pool_bounds(c, lo, hi, 0.8),
        ),
        ("registry.finish, Prophet's rows", lambda: registry.finish(raw, act, cfg, "prophet")),
    ):
        s = best(fn)
        print(f"{label:42s} {1000 * s:8.1f} ms CPU a batch, {1000 * s / n:6.2f} ms a series")


if __name__ == "__main__":
    main()
