"""What forecasting from more origins costs: each engine's CPU per series with and without windows.

    PYTHONPATH=.:benchmarks .venv/bin/python benchmarks/windows_cost.py [--family demo] [--servers 40] [--repeat 2]

One fleet of ``accuracy.py``; each engine's ``predict`` (raw fits, no calibration) with
``ForecastConfig(windows=())`` (the backtest and the refit, as before issue 26), with the shipped
windows, and for Prophet with its window fits started cold (Prophet's own start) instead of from
the previous origin's fit. Modes alternate within each repeat; CPU is this process's plus its
finished children's (CmdStan). Also prints how far the warm windows' forecasts are from the cold
ones, since only their accuracy on held-out months (``accuracy.py --prophet-start``) decides.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
logging.disable(logging.WARNING)

import accuracy as A  # noqa: E402
import numpy as np  # noqa: E402

from capacity_assets.forecasting.engines import prophet, registry  # noqa: E402
from capacity_assets.forecasting.engines.base import ForecastConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="demo")
    ap.add_argument("--servers", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--engines", default="challenger,ets,prophet")
    args = ap.parse_args()
    data = A.load_family(args.family, args.servers, args.seed, ForecastConfig(seed=args.seed))
    history = data["history"]
    n = history.groupby(A.KEY).ngroups
    registry.engine("ets").predict(history.head(2000), ForecastConfig(windows=()))  # imports
    modes = {
        "no windows": ((), True),
        "windows (2,), warm (shipped)": ((2,), True),
        "windows (3, 2), warm": ((3, 2), True),
    }
    cost: dict[tuple[str, str], list[float]] = {}
    windows_rows = {}
    for _ in range(args.repeat):
        for name in args.engines.split(","):
            engine_modes = dict(modes)
            if name == "prophet":
                engine_modes["windows (2,), cold"] = ((2,), False)
            for mode, (windows, warm) in engine_modes.items():
                prophet.WINDOW_WARM_START = warm
                cfg = ForecastConfig(seed=args.seed, windows=windows)
                c = A._cpu()
                rows, _ = registry.engine(name).predict(history, cfg)
                cost.setdefault((name, mode), []).append(1000 * (A._cpu() - c) / n)
                if name == "prophet" and windows == (2,):
                    windows_rows[warm] = rows[rows["split"] == "window"].sort_values(
                        ["server_id", "resource", "origin", "ds"], ignore_index=True
                    )
    prophet.WINDOW_WARM_START = True
    print(
        f"{args.family}{args.servers}s{args.seed}: {n} series, ms of CPU per series (each repeat)\n"
    )
    print("| engine | mode | ms CPU/series |\n|---|---|---:|")
    for (name, mode), ms in cost.items():
        print(f"| {name} | {mode} | {' / '.join(f'{v:.1f}' for v in ms)} |")
    for mode in modes:
        total = [sum(v) for v in zip(*(ms for (_, m), ms in cost.items() if m == mode))]
        print(f"| all | {mode} | {' / '.join(f'{v:.1f}' for v in total)} |")
    if len(windows_rows) == 2:
        warm, cold = windows_rows[True], windows_rows[False]
        both = warm.merge(cold, on=["server_id", "resource", "origin", "ds"])
        d = (both["yhat_x"] - both["yhat_y"]).abs()
        print(
            f"\nProphet's window forecasts, warm against cold start: mean |difference| "
            f"{d.mean():.3f} points, 99th percentile {np.quantile(d, 0.99):.3f}, largest {d.max():.2f}"
        )


if __name__ == "__main__":
    main()
