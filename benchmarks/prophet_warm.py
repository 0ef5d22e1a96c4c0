"""Prophet's refit warm-started from the backtest fit, or not: L-BFGS work, CPU and held-out accuracy.

    PYTHONPATH=.:benchmarks .venv/bin/python benchmarks/prophet_warm.py [--modes off,mapped] [--fleets demo40s0]
    PYTHONPATH=.:benchmarks .venv/bin/python benchmarks/prophet_warm.py --cpu demo60s0 [--cpu-series 60]

On the ten fleets of benchmarks/calibration_variants.py (40 servers x seeds 0-2 and 60 servers x
seeds 0-1, per family), Prophet is fitted once per start of its refit (``prophet.WARM_START``):

* ``off``: Prophet's own start (``linear_growth_init``, zero deltas and betas), what ships;
* ``stan_init``: Prophet's documented warm start, the backtest fit's parameters as they are;
* ``mapped``: the backtest fit's curve carried onto the refit's scales and changepoints
  (``prophet.warm_init``);
* ``seasonal``: Prophet's own trend start, seasonality and noise from ``mapped``.

The other engines' raw fits are the same for every start (cached under benchmarks/out/raw_cache/,
shared with calibration_variants.py). Per fleet and start it prints CmdStan's L-BFGS iterations and
gradient evaluations of the backtest fits and of the refits (CmdStan's own count: every run
with ``refresh`` high enough to print only its last iteration), Prophet's CPU per series
(CmdStan children included), how far Prophet's future forecasts moved from ``off``'s, and the
held-out scores of Prophet alone and of the published golden record (as benchmarks/accuracy.py
scores them); then the same pooled per family. Results also go to benchmarks/out/prophet_warm.json.
CPU in that run swings with a shared machine's load; ``--cpu FLEET`` measures the refit's CmdStan
CPU alone instead, the starts interleaved series by series and repeated.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
logging.disable(logging.WARNING)

import accuracy as A  # noqa: E402
import calibration_variants as CV  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from capacity_assets.forecasting import combination, tournament  # noqa: E402
from capacity_assets.forecasting.engines import prophet as P  # noqa: E402
from capacity_assets.forecasting.engines import registry  # noqa: E402
from capacity_assets.forecasting.engines.base import ForecastConfig  # noqa: E402

OUT = os.path.join(HERE, "out", "prophet_warm.json")
_LAST_ITER = re.compile(r"^\s*(\d+)\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+(\d+)", re.M)
COUNTS: dict[str, list] = {}


def stan_init(prev: dict, prev_design, design, y_scale: float) -> dict:
    """Prophet's documented warm start (``stan_init(m)``): the previous parameters as they are."""
    beta = np.zeros(design.K)
    n = min(design.K, len(prev["beta"]))
    beta[:n] = prev["beta"][:n]
    delta = np.zeros(design.S)
    n = min(design.S, len(prev["delta"]))
    delta[:n] = prev["delta"][:n]
    return {
        "k": float(prev["k"]),
        "m": float(prev["m"]),
        "delta": delta.tolist(),
        "beta": beta.tolist(),
        "sigma_obs": max(float(prev["sigma_obs"]), 1e-3),
    }


def seasonal_init(prev: dict, prev_design, design, y_scale: float) -> dict:
    """Prophet's own trend start (``linear_growth_init``, zero deltas); seasonality and noise from
    the backtest fit (``warm_init``'s): the well-determined parameters start at their optimum, the
    flat changepoint directions where a cold fit starts them."""
    out = P.warm_init(prev, prev_design, design, y_scale)
    ys = design_y[0] / y_scale
    k = (ys[-1] - ys[0]) / (design.t[-1] - design.t[0])
    return {**out, "k": k, "m": ys[0] - k * design.t[0], "delta": [0.0] * design.S}


design_y: list = [None]  # the refit's y, for seasonal_init (set by the wrapped fit_map)
_REAL_FIT_MAP = P.fit_map


def _fit_map(y, design, workdir, tag, seed=0, init=None):
    design_y[0] = y
    return _REAL_FIT_MAP(y, design, workdir, tag, seed, init=init)


P.fit_map = _fit_map
INITS = {"off": None, "stan_init": stan_init, "mapped": P.warm_init, "seasonal": seasonal_init}


def counting_run_stan(data_path, init_path, out_path, algorithm, seed):
    """``prophet._run_stan`` with ``refresh`` set so CmdStan prints its last iteration, counted."""
    cmd = [
        P.STAN_BIN,
        "random",
        f"seed={seed}",
        "data",
        f"file={data_path}",
        f"init={init_path}",
        "output",
        f"file={out_path}",
        "refresh=1000000",
        "method=optimize",
        f"algorithm={algorithm}",
        *([f"tol_rel_grad={P.LBFGS_TOL_REL_GRAD:g}"] if algorithm == "lbfgs" else []),
        "iter=10000",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise P.FitError(f"CmdStan {algorithm} exited {proc.returncode}")
    found = _LAST_ITER.findall(proc.stdout)
    kind = "refit" if os.path.basename(data_path).split(".")[0].endswith("f") else "backtest"
    if found:
        COUNTS.setdefault(kind, []).append((int(found[-1][0]), int(found[-1][1]), algorithm))


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def scores(fc: pd.DataFrame, hidden: pd.DataFrame, end) -> dict:
    m = A.held_out(fc, hidden)
    risk = A.risk_calls(fc, hidden, end, 95.0, 90)
    return dict(
        inside=int(((m.y >= m.yhat_lower) & (m.y <= m.yhat_upper)).sum()),
        days=len(m),
        abs_err=float((m.y - m.yhat).abs().sum()),
        abs_y=float(m.y.abs().sum()),
        tp=risk["tp"],
        fp=risk["fp"],
        fn=risk["fn"],
    )


def one(data: dict, cfg: ForecastConfig, mode: str) -> tuple[dict, pd.DataFrame]:
    hist, hidden, end = data["history"], data["hidden"], data["end"]
    P.WARM_START, P.warm_init = mode != "off", INITS[mode] or INITS["mapped"]
    P._ROW_JSON.clear()  # every start pays for the feature rows' JSON, as a fresh process does
    COUNTS.clear()
    c0, w0 = _cpu(), time.perf_counter()
    res = {"prophet": registry.run("prophet", hist, cfg)}
    cpu, wall = _cpu() - c0, time.perf_counter() - w0
    n = hist.groupby(["server_id", "resource"]).ngroups
    for name in ("challenger", "ets"):
        res[name] = registry.run(name, hist, cfg)
    res["combination"] = combination.combine(res, data["actuals"], cfg)
    by = {k: r.assign(batch="b") for k, r in res.items()}
    champs = tournament.champions(
        by, data["actuals"].assign(batch="b"), threshold=95.0, risk_days=90
    )
    gold = tournament.golden_record(by, champs, pd.Timestamp.now(), "x", upper="consensus").assign(
        split="future"
    )
    out = dict(series=n, cpu=cpu, wall=wall)
    for kind in ("backtest", "refit"):
        c = COUNTS.get(kind, [])
        out[f"{kind}_fits"] = len(c)
        out[f"{kind}_iters"] = sum(i for i, _, _ in c)
        out[f"{kind}_evals"] = sum(e for _, e, _ in c)
        out[f"{kind}_newton"] = sum(a == "newton" for _, _, a in c)
    out["prophet"] = scores(res["prophet"], hidden, end)
    out["golden"] = scores(gold, hidden, end)
    out["wins"] = champs["champion"].value_counts().to_dict()
    fut = res["prophet"][res["prophet"]["split"] == "future"]
    return out, fut.set_index(["server_id", "resource", "ds"])["yhat"]


def _f1(tp, fp, fn):
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _line(label: str, r: dict) -> str:
    p, g = r["prophet"], r["golden"]
    per = lambda k: r[f"{k}_iters"] / max(r[f"{k}_fits"], 1)  # noqa: E731
    pere = lambda k: r[f"{k}_evals"] / max(r[f"{k}_fits"], 1)  # noqa: E731
    return (
        f"| {label} | {per('backtest'):.0f} / {pere('backtest'):.0f} | {per('refit'):.0f} / "
        f"{pere('refit'):.0f} | {1000 * r['cpu'] / r['series']:.1f} | "
        f"{100 * p['abs_err'] / p['abs_y']:.3f} | {p['inside'] / p['days']:.3f} | "
        f"{p['tp']}/{p['fp']}/{p['fn']} | {100 * g['abs_err'] / g['abs_y']:.3f} | "
        f"{g['inside'] / g['days']:.3f} | {g['tp']}/{g['fp']}/{g['fn']} "
        f"({_f1(g['tp'], g['fp'], g['fn']):.3f}) |"
    )


HEADER = (
    "| fleet, start | backtest fit: iterations / evals | refit: iterations / evals | "
    "Prophet ms CPU/series | Prophet WAPE | Prophet coverage | Prophet risk TP/FP/FN | "
    "golden WAPE | golden coverage | golden risk TP/FP/FN (F1) |\n"
    "|---|---:|---:|---:|---:|---:|---|---:|---:|---|"
)


def cpu_ab(fleet: str, n_series: int, repeat: int, modes: list[str]) -> None:
    """CmdStan CPU of the refit alone per start, the starts interleaved series by series and
    repeated, so the load of a shared machine falls on every start alike."""
    import resource
    import tempfile

    fam, rest = fleet[:4], fleet[4:]
    servers, seed = (int(v) for v in rest.split("s"))
    cfg = ForecastConfig(seed=seed)
    hist = A.load_family(fam, servers, seed, cfg)["history"]
    cpu = {m: 0.0 for m in modes}
    evals = {m: 0 for m in modes}
    fits = 0
    P._run_stan = counting_run_stan
    with tempfile.TemporaryDirectory() as workdir:
        cache = P.DesignCache()
        for i, (_, g) in enumerate(hist.groupby(["server_id", "resource"], sort=True)):
            if i >= n_series:
                break
            days, y = P._as_days(g["ds"]), g["y"].to_numpy(float)
            cut = P._as_days(pd.Series([P.backtest_cutoff(g["ds"].iloc[-1], cfg)]))[0]
            train = days <= cut
            if P._degenerate(y[train]) or P._degenerate(y):
                continue
            d_bt, d_full = cache.get(days[train]), cache.get(days)
            p_bt = P.fit_map(y[train], d_bt, workdir, "b", seed)
            scale = float(abs(y).max()) or 1.0
            design_y[0] = y
            inits = {m: INITS[m] and INITS[m](p_bt, d_bt, d_full, scale) for m in modes}
            fits += 1
            for _ in range(repeat):
                for m in modes:
                    COUNTS.clear()
                    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    P.fit_map(y, d_full, workdir, "f", seed, init=inits[m])
                    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu[m] += c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime
                    evals[m] += sum(e for _, e, _ in COUNTS.get("refit", []))
    for m in modes:
        print(
            f"{fleet} {m:10s} refit CmdStan CPU {1000 * cpu[m] / fits / repeat:6.2f} ms, "
            f"{evals[m] / fits / repeat:6.1f} gradient evaluations a refit ({fits} series x {repeat})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="off,stan_init,mapped,seasonal")
    ap.add_argument("--fleets", default="", help="e.g. demo40s0,wild40s0 (default: all ten)")
    ap.add_argument("--cpu", default="", help="FLEET: only the refit's CmdStan CPU per start")
    ap.add_argument("--cpu-series", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    modes = args.modes.split(",")
    if args.cpu:
        return cpu_ab(args.cpu, args.cpu_series, args.repeat, modes)
    os.makedirs(CV.CACHE, exist_ok=True)
    real = P.predict
    CV.install_raw_cache()
    P.predict = real  # Prophet itself is fitted every time
    P._run_stan = counting_run_stan
    fleets = [
        f for f in CV.FLEETS if not args.fleets or f"{f[0]}{f[1]}s{f[2]}" in args.fleets.split(",")
    ]
    results = []
    print(HEADER, flush=True)
    for fam, servers, seed in fleets:
        cfg = ForecastConfig(seed=seed)
        data = A.load_family(fam, servers, seed, cfg)
        base = None
        for mode in modes:
            r, yhat = one(data, cfg, mode)
            if base is None:
                base = yhat
            d = (yhat - base.reindex(yhat.index)).abs()
            r.update(family=fam, fleet=f"{fam}{servers}s{seed}", mode=mode)
            r.update(moved_max=float(d.max()), moved_mean=float(d.mean()))
            results.append(r)
            print(
                _line(f"{r['fleet']}, {mode}", r)
                + f" moved max {r['moved_max']:.2f} mean {r['moved_mean']:.3f} pp",
                flush=True,
            )
            with open(OUT, "w") as f:
                json.dump(results, f, indent=1)
    print("\nPooled over the fleets of each family:\n\n" + HEADER)
    for fam in ("demo", "wild"):
        for mode in modes:
            rs = [r for r in results if r["family"] == fam and r["mode"] == mode]
            if not rs:
                continue
            tot = {
                k: sum(r[k] for r in rs)
                for k in rs[0]
                if isinstance(rs[0][k], (int, float)) and not k.startswith("moved")
            }
            for who in ("prophet", "golden"):
                tot[who] = {k: sum(r[who][k] for r in rs) for k in rs[0][who]}
            print(_line(f"{fam} ({len(rs)} fleets), {mode}", tot))


if __name__ == "__main__":
    main()
