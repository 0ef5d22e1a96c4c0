"""ETS configurations through benchmarks/accuracy.py: which model and window earn their CPU.

    PYTHONPATH=.:benchmarks .venv/bin/python benchmarks/ets_variants.py screen|full --configs a,b \
        [--servers 40] [--family demo,wild] [--seed 0]

screen: ETS alone (registry.run('ets') with the patched fit), ms CPU/series and its held-out scores.
full:   accuracy.run_family with --engines prophet,challenger,ets; prophet, challenger, naive and stock
        Prophet results are cached on disk (keyed on the history's hash; all deterministic) so that
        only ETS is refitted per configuration. Tournament, combination, golden record run as is.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import time
import warnings

import accuracy  # benchmarks/accuracy.py
import numpy as np
import pandas as pd

from capacity_assets.forecasting.engines import ets
from capacity_assets.forecasting.engines.base import ForecastConfig

CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "ets_variants_cache")
os.makedirs(CACHE, exist_ok=True)
Z80 = 1.2815515655446004

CONFIGS = {
    # name: (class, kwargs, window)
    "ZZA_d_365": ("AutoETS", dict(season_length=7, model="ZZA", damped=True), 365),  # today's
    "ZZA_d_270": ("AutoETS", dict(season_length=7, model="ZZA", damped=True), 270),
    "ZZA_d_180": ("AutoETS", dict(season_length=7, model="ZZA", damped=True), 180),
    "AAA_d_365": ("AutoETS", dict(season_length=7, model="AAA", damped=True), 365),
    "AAA_d_270": ("AutoETS", dict(season_length=7, model="AAA", damped=True), 270),
    "AAA_d_180": ("AutoETS", dict(season_length=7, model="AAA", damped=True), 180),
    "AAA_d_120": ("AutoETS", dict(season_length=7, model="AAA", damped=True), 120),
    "AAA_d_150": ("AutoETS", dict(season_length=7, model="AAA", damped=True), 150),
    "AAA_d_210": ("AutoETS", dict(season_length=7, model="AAA", damped=True), 210),
    "AAA_phi98_180": ("AutoETS", dict(season_length=7, model="AAA", damped=True, phi=0.98), 180),
    "AAA_phi98_365": ("AutoETS", dict(season_length=7, model="AAA", damped=True, phi=0.98), 365),
    "AAN_d_365": ("AutoETS", dict(season_length=7, model="AAN", damped=True), 365),
    "AAN_d_180": ("AutoETS", dict(season_length=7, model="AAN", damped=True), 180),
    "ANA_365": ("AutoETS", dict(season_length=7, model="ANA", damped=False), 365),
    "ANA_180": ("AutoETS", dict(season_length=7, model="ANA", damped=False), 180),
    "AZA_d_365": ("AutoETS", dict(season_length=7, model="AZA", damped=True), 365),
    "AZA_d_180": ("AutoETS", dict(season_length=7, model="AZA", damped=True), 180),
    "Holt_365": ("Holt", dict(season_length=7), 365),
    "HoltWinters_365": ("HoltWinters", dict(season_length=7), 365),
    "HoltWinters_180": ("HoltWinters", dict(season_length=7), 180),
    "SESOpt_365": ("SeasonalExponentialSmoothingOptimized", dict(season_length=7), 365),
    "SESOpt_180": ("SeasonalExponentialSmoothingOptimized", dict(season_length=7), 180),
    "AutoTheta_180": ("AutoTheta", dict(season_length=7), 180),
    "AutoTheta_120": ("AutoTheta", dict(season_length=7), 120),
    "DOTM_365": ("DynamicOptimizedTheta", dict(season_length=7), 365),
    "DOTM_180": ("DynamicOptimizedTheta", dict(season_length=7), 180),
}
NO_NATIVE_INTERVALS = {"SeasonalExponentialSmoothingOptimized"}


def make_fit(name: str):
    cls_name, kwargs, window = CONFIGS[name]
    import statsforecast.models as sm

    cls = getattr(sm, cls_name)

    def _fit_forecast(y, h, interval):
        y = y[-window:]
        if len(y) < ets.MIN_POINTS:
            raise ValueError(f"only {len(y)} observations")
        if np.ptp(y) < 1e-9:
            raise ValueError("constant series")
        level = int(round(interval * 100))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if cls_name in NO_NATIVE_INTERVALS:
                # no model intervals: in-sample residual sd, widening like a seasonal random walk
                fc = cls(**kwargs).forecast(y=y.astype(float), h=h, fitted=True)
                mean = np.asarray(fc["mean"], float)
                res = y - np.asarray(fc["fitted"], float)
                sd = float(np.nanstd(res[np.isfinite(res)]))
                half = Z80 * sd * np.sqrt(np.ceil(np.arange(1, h + 1) / kwargs["season_length"]))
                lo, hi = mean - half, mean + half
            else:
                fc = cls(**kwargs).forecast(y=y.astype(float), h=h, level=[level])
                mean, lo, hi = (
                    np.asarray(fc[k], float) for k in ("mean", f"lo-{level}", f"hi-{level}")
                )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError("non-finite forecast")
        return mean, np.minimum(lo, mean), np.maximum(hi, mean)

    return _fit_forecast


def install(name: str) -> None:
    """Make ``ets`` fit the variant: its fit per series (the engine's fallback path), given each
    series' whole history so the variant's own window applies."""
    ets._fit_forecast = make_fit(name)
    ets.WINDOW_DAYS = 10**9
    ets._batch = lambda windows, h, interval, log: ets._one_by_one(windows, h, interval)


def _hash(df: pd.DataFrame) -> str:
    return hashlib.sha1(pd.util.hash_pandas_object(df, index=False).values.tobytes()).hexdigest()[
        :16
    ]


def cached(tag, key, fn, folder=CACHE):
    """``fn()``, pickled under ``folder`` as ``tag_key`` the first time and read back after."""
    path = os.path.join(folder, f"{tag}_{key}.pkl")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    out = fn()
    with open(path, "wb") as f:
        pickle.dump(out, f)
    return out


def install_cache():
    real_run, real_stock = accuracy.run, accuracy.stock_prophet

    def run(name, history, cfg, log=None):
        if name == "ets":
            return real_run(name, history, cfg, log)
        return cached(name, _hash(history), lambda: real_run(name, history, cfg, log))

    def stock(observed, cfg):
        return cached("stock", _hash(observed), lambda: real_stock(observed, cfg))

    accuracy.run, accuracy.stock_prophet = run, stock


def screen(configs, families, servers, seed):
    from capacity_assets.forecasting.engines.registry import run

    cfg = ForecastConfig(seed=seed)
    out = []
    for fam in families:
        data = accuracy.load_family(fam, servers, seed, cfg)
        n = data["history"].groupby(accuracy.KEY).ngroups
        for c in configs:
            install(c)
            h = logging.getLogger("screen")
            t0 = time.process_time()
            res = run("ets", data["history"], cfg, log=h)
            ms = 1000 * (time.process_time() - t0) / n
            s = accuracy.accuracy(res, data["hidden"])
            fb = (
                int(
                    res["model"]
                    .astype(str)
                    .str.contains("fallback")
                    .groupby([res["server_id"], res["resource"]])
                    .any()
                    .sum()
                )
                if "model" in res
                else -1
            )
            row = dict(
                config=c,
                family=fam,
                series=n,
                ms=ms,
                wape=s["wape"],
                mape_med=s["mape_median"],
                coverage=s["coverage"],
                fallback=fb,
            )
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def full(configs, families, servers, seed):
    install_cache()
    accuracy.FITTED = ("prophet", "challenger", "ets")
    cfg = ForecastConfig(seed=seed)
    summary = []
    for c in configs:
        if c == "none":  # the default engines, no ETS
            accuracy.FITTED = ("prophet", "challenger")
        else:
            accuracy.FITTED = ("prophet", "challenger", "ets")
            install(c)
        for fam in families:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                r = accuracy.run_family(fam, servers, seed, cfg, 95.0, 90)
            text = buf.getvalue()
            with open(
                os.path.join(os.path.dirname(CACHE), f"ets_full_{c}_{fam}_{servers}_s{seed}.md"),
                "w",
            ) as f:
                f.write(text)
            sc = r["scores"]
            g, st = sc["golden record"], sc["stock prophet"]
            e = sc.get("ets", {"wape": float("nan")})
            r["cpu"].setdefault("ets", float("nan"))
            row = dict(
                config=c,
                family=fam,
                ets_ms=1000 * r["cpu"]["ets"] / r["n_series"],
                ets_wape=e["wape"],
                ets_wape_stock=e["wape"] / st["wape"],
                gold_wape_stock=g["wape"] / st["wape"],
                gold_cov=g["coverage"],
                gold_tpfpfn=f"{g['tp']}/{g['fp']}/{g['fn']}",
                gold_p=g["precision"],
                gold_r=g["recall"],
                gold_f1=g["f1"],
                stock_f1=st["f1"],
                stock_r=st["recall"],
                ets_wins=int(r["wins"].get("ets", 0)),
                checks={k: bool(v) for k, v in r["checks"].items()},
            )
            print(json.dumps(row), flush=True)
            summary.append(row)
    return summary


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["screen", "full"])
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--family", default="demo,wild")
    ap.add_argument("--servers", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    t = time.process_time()
    import statsforecast.models  # noqa: F401 - import cost kept out of the per-config timing

    print(json.dumps({"statsforecast_import_cpu_s": time.process_time() - t}), flush=True)
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    fams = [f.strip() for f in a.family.split(",") if f.strip()]
    rows = (screen if a.mode == "screen" else full)(configs, fams, a.servers, a.seed)
    with open(
        os.path.join(os.path.dirname(CACHE), f"ets_{a.mode}_{int(time.time())}.json"), "w"
    ) as f:
        json.dump(rows, f, indent=1, default=str)


if __name__ == "__main__":
    main()
