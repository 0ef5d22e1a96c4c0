"""Held-out accuracy of the contenders, the golden record and stock Prophet, on two fleet families.

    python benchmarks/accuracy.py [--family demo,wild] [--servers 40] [--seed 0]

Each family's fleet gets its history plus 6 hidden months. Every engine, the combination and the
tournament see the history only (exactly what the pipeline gives them: daily means on a complete
calendar, gap days interpolated and flagged); their FUTURE rows are scored on the hidden days that
were observed, up to 180 days after the last history day. This is the test the tournament cannot
run (it only has backtests), and the one that says whether the future bounds are honest.

Families (report them separately; never tune on the one you report on):

* ``demo``: ``capacity_assets.demo.fleet`` (36 months). The engines were designed and tuned on it.
* ``wild``: ``benchmarks/fleets.py``, written to be unlike the demo (20-26 months, heavy tails,
  multiplicative weekly cycles, logistic and accelerating growth, leaks, outages, quarter ends,
  hourly samples). Held out: nothing in ``capacity_assets/forecasting`` was tuned on it.

The anchor is stock Prophet: ``prophet.Prophet()`` with default settings, fitted on all history
(observed days only, as a new user would), with its own 80 % intervals, clipped to 0-100 like
everything else. Every table reports the golden record against it.

Risk calls: a series is called at risk when its upper bound reaches ``--threshold`` within
``--risk-days`` of the last history day (the product's rule); a call is true when a hidden actual
(a daily mean) reaches the threshold within the same days. MAPE divides by max(|actual|, 5) (the
tournament's definition).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from capacity_assets.config import CapacitySettings  # noqa: E402
from capacity_assets.forecasting import combination, tournament  # noqa: E402
from capacity_assets.forecasting.engines.base import ForecastConfig, min_history_days  # noqa: E402
from capacity_assets.forecasting.engines.registry import COMBINERS, run  # noqa: E402

FITTED: tuple[str, ...] = CapacitySettings().contenders  # set from --engines
from capacity_assets.schema import RESOURCES  # noqa: E402

HIDDEN_MONTHS = 6
SCORED_DAYS = 180
KEY = ["server_id", "resource"]
FAMILIES = {
    "demo": "capacity_assets.demo.fleet.generate_fleet (36 months; the engines were tuned on it)",
    "wild": "benchmarks/fleets.py (20-26 months, unlike the demo; held out)",
}


def _cpu() -> float:
    """CPU seconds of this process and its finished children (cmdstan runs Prophet's fits)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def raw_fleet(family: str, servers: int, seed: int) -> tuple[pd.DataFrame, pd.Timestamp]:
    """(metrics with history and hidden months, last history day)."""
    if family == "demo":
        from capacity_assets.demo import fleet as demo

        metrics, _ = demo.generate_fleet(servers, 36, seed, future_months=HIDDEN_MONTHS)
        return metrics, pd.Timestamp(demo.DEFAULT_END).normalize()
    if family == "wild":
        import fleets

        metrics, _ = fleets.generate(servers, seed, future_months=HIDDEN_MONTHS)
        return metrics, fleets.DEFAULT_END
    raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")


def daily(metrics: pd.DataFrame) -> pd.DataFrame:
    """Daily means of the observed samples (hourly servers averaged, as CAPACITY_DAILY_AGG=mean)."""
    df = metrics.assign(ds=pd.to_datetime(metrics["timestamp"]).dt.normalize())
    out = (
        df.groupby(KEY + ["ds"], as_index=False)["utilization_pct"]
        .mean()
        .rename(columns={"utilization_pct": "y"})
    )
    out[KEY] = out[KEY].astype(str)
    return out


def load_family(family: str, servers: int, seed: int, cfg: ForecastConfig) -> dict:
    """History as the pipeline hands it to the engines, the observed history, and the hidden days."""
    from capacity_assets.inputs.cleaning import complete_calendar

    metrics, end = raw_fleet(family, servers, seed)
    days = daily(metrics)
    observed = days[days["ds"] <= end]
    full = complete_calendar(observed)[0][KEY + ["ds", "y", "filled"]]
    length = full.groupby(KEY)["ds"].transform("size")
    full = full[
        length >= min_history_days(cfg)
    ]  # the pipeline lists shorter ones in skipped_series
    full = full.sort_values(KEY + ["ds"]).reset_index(drop=True)
    series = full[KEY].drop_duplicates()
    observed = observed.merge(series, on=KEY)
    hidden = days[(days["ds"] > end) & (days["ds"] <= end + pd.Timedelta(days=SCORED_DAYS))].merge(
        series, on=KEY
    )
    return {
        "family": family,
        "end": end,
        "history": full[KEY + ["ds", "y"]],
        "actuals": full,
        "history_obs": observed,
        "hidden": hidden,
    }


def stock_prophet(observed: pd.DataFrame, cfg: ForecastConfig) -> pd.DataFrame:
    """``prophet.Prophet()`` as shipped, one fit per series on its observed days; future rows with its
    own ``interval_width`` (0.80 by default, the same as ``cfg.interval``), clipped to 0-100."""
    from prophet import Prophet

    logging.getLogger("cmdstanpy").disabled = True
    logging.getLogger("prophet").setLevel(logging.ERROR)
    parts = []
    for (server, resource), g in observed.groupby(KEY, sort=True):
        g = g.sort_values("ds")
        ds = pd.date_range(g["ds"].max() + pd.Timedelta(days=1), periods=cfg.horizon_days, freq="D")
        try:
            m = Prophet().fit(g[["ds", "y"]])
            p = m.predict(pd.DataFrame({"ds": ds}))
            yhat, lo, hi = (p[c].to_numpy() for c in ("yhat", "yhat_lower", "yhat_upper"))
        except Exception:  # noqa: BLE001 - a constant series: a flat line, no band
            yhat = lo = hi = np.full(len(ds), float(g["y"].iloc[-1]))
        parts.append(
            pd.DataFrame(
                {
                    "server_id": server,
                    "resource": resource,
                    "ds": ds,
                    "split": "future",
                    "yhat": np.clip(yhat, 0, 100),
                    "yhat_lower": np.clip(lo, 0, 100),
                    "yhat_upper": np.clip(hi, 0, 100),
                    "model": "stock prophet",
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


# --- scoring ---------------------------------------------------------------------------------------


def held_out(fc: pd.DataFrame, hidden: pd.DataFrame) -> pd.DataFrame:
    """Future rows joined with the observed hidden days."""
    return fc.loc[fc["split"] == "future", KEY + ["ds", "yhat", "yhat_lower", "yhat_upper"]].merge(
        hidden[KEY + ["ds", "y"]], on=KEY + ["ds"]
    )


def accuracy(fc: pd.DataFrame, hidden: pd.DataFrame) -> dict:
    m = held_out(fc, hidden)
    err = (m["y"] - m["yhat"]).abs()
    mape = (
        (err / np.maximum(m["y"].abs(), 5.0) * 100).groupby([m["server_id"], m["resource"]]).mean()
    )
    inside = (m["y"] >= m["yhat_lower"]) & (m["y"] <= m["yhat_upper"])
    out = {
        "series": len(mape),
        "mape_median": mape.median(),
        "mape_mean": mape.mean(),
        "wape": err.sum() / m["y"].abs().sum() * 100,
        "coverage": inside.mean(),
        "below_upper": (m["y"] <= m["yhat_upper"]).mean(),
        "_mape": mape,
    }
    for r in RESOURCES:
        out[f"coverage_{r}"] = inside[m["resource"] == r].mean()
    return out


def risk_calls(
    fc: pd.DataFrame, hidden: pd.DataFrame, end: pd.Timestamp, threshold: float, risk_days: int
) -> dict:
    """Precision and recall of 'yhat_upper >= threshold within risk_days' against the hidden days."""
    window = (
        (fc["split"] == "future")
        & (fc["ds"] > end)
        & (fc["ds"] <= end + pd.Timedelta(days=risk_days))
    )
    f = fc[window]
    called = f.assign(hit=f["yhat_upper"] >= threshold).groupby(KEY)["hit"].any()
    h = hidden[(hidden["ds"] > end) & (hidden["ds"] <= end + pd.Timedelta(days=risk_days))]
    truth = h.assign(hit=h["y"] >= threshold).groupby(KEY)["hit"].any()
    called, truth = called.align(truth, join="left", fill_value=False)
    tp, fp, fn = (
        int((called & truth).sum()),
        int((called & ~truth).sum()),
        int((~called & truth).sum()),
    )
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * p * r / (p + r) if tp else 0.0
    return {
        "called": int(called.sum()),
        "true": int(truth.sum()),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": p,
        "recall": r,
        "f1": f1,
    }


def targets(s: dict, anchor: dict, label: str, best_single: float | None = None) -> dict:
    """The issue's targets for the golden record's scores ``s`` against stock Prophet's
    (``anchor``) and, when given, the best single contender's WAPE; printed, and returned."""
    checks = (
        {} if best_single is None else {"WAPE <= best single contender": s["wape"] <= best_single}
    )
    checks.update(
        {
            "WAPE <= 0.9 x stock": s["wape"] <= 0.9 * anchor["wape"],
            "coverage in [0.75, 0.85]": 0.75 <= s["coverage"] <= 0.85,
            "risk F1 >= stock": s["f1"] >= anchor["f1"],
            "risk recall >= stock": s["recall"] >= anchor["recall"],
        }
    )
    print(
        f"\nTargets ({label}): "
        + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in checks.items())
    )
    return checks


# --- one family ------------------------------------------------------------------------------------


def _md(rows: list[list], header: list[str]) -> str:
    def fmt(v):
        return (
            (f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}")
            if isinstance(v, float) and np.isfinite(v)
            else ("" if isinstance(v, float) else str(v))
        )  # noqa: E731

    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    return "\n".join(lines + ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows])


def run_family(
    family: str, servers: int, seed: int, cfg: ForecastConfig, threshold: float, risk_days: int
) -> dict:
    data = load_family(family, servers, seed, cfg)
    history, hidden, end = data["history"], data["hidden"], data["end"]
    n_series = history.groupby(KEY).ngroups
    print(
        f"\n## {family}: {FAMILIES[family]}\n\n{servers} servers, seed {seed}: {n_series} series forecast, history "
        f"{history['ds'].min():%Y-%m-%d}..{end:%Y-%m-%d}, scored on {hidden['ds'].nunique()} hidden days "
        f"({len(hidden):,} series-days); nominal interval {cfg.interval:.0%}, risk = upper >= {threshold:g} "
        f"within {risk_days} days\n",
        flush=True,
    )
    results, cpu = {}, {}
    for name in ["naive", *FITTED]:
        c = _cpu()
        results[name] = run(name, history, cfg)
        cpu[name] = _cpu() - c
    c = _cpu()
    for name in COMBINERS:
        results[name] = combination.combine({n: results[n] for n in FITTED}, data["actuals"], cfg)
    cpu["combination"] = _cpu() - c
    c = _cpu()
    stock = stock_prophet(data["history_obs"], cfg)
    cpu["stock prophet"] = _cpu() - c
    by = {n: results[n].assign(batch="b") for n in (*FITTED, *COMBINERS)}
    actuals = data["actuals"].assign(batch="b")
    c = _cpu()
    champs = tournament.champions(by, actuals, threshold=threshold, risk_days=risk_days)
    mape_rule = tournament.champions(by, actuals)
    gold = {
        upper: tournament.golden_record(
            by, champs, pd.Timestamp.now(), "bench", upper=upper
        ).assign(split="future")
        for upper in ("champion", "consensus")
    }
    cpu["golden record"] = _cpu() - c

    table = {
        "naive": results["naive"],
        **{n: results[n] for n in (*FITTED, *COMBINERS)},
        "golden record (champion bounds)": gold["champion"],
        "golden record": gold["consensus"],
        "stock prophet": stock,
    }
    scores = {
        n: {**accuracy(fc, hidden), **risk_calls(fc, hidden, end, threshold, risk_days)}
        for n, fc in table.items()
    }
    anchor = scores["stock prophet"]
    rows = []
    for n, s in scores.items():
        ms = 1000 * cpu.get(n, np.nan) / n_series if n in cpu else float("nan")
        rows.append(
            [
                n,
                s["mape_median"],
                s["wape"],
                s["wape"] / anchor["wape"],
                s["coverage"],
                *[s[f"coverage_{r}"] for r in RESOURCES],
                f"{s['tp']}/{s['fp']}/{s['fn']}",
                s["precision"],
                s["recall"],
                s["f1"],
                ms,
            ]
        )
    print(
        _md(
            rows,
            [
                "model",
                "MAPE med",
                "WAPE",
                "WAPE / stock",
                "coverage",
                *[f"cov {r}" for r in RESOURCES],
                "risk TP/FP/FN",
                "precision",
                "recall",
                "F1",
                "ms CPU/series",
            ],
        )
    )

    wins = tournament.wins(champs)
    per_res = champs.groupby("resource")["champion_mape"].median()
    win_res = champs.groupby(["resource", "champion"]).size().unstack(fill_value=0)
    print("\nWins (champion per series) and median champion backtest MAPE, per resource:\n")
    names = list(wins)
    print(
        _md(
            [
                [
                    r,
                    per_res.get(r, np.nan),
                    *[int(win_res.loc[r].get(n, 0)) if r in win_res.index else 0 for n in names],
                ]
                for r in RESOURCES
            ]
            + [["all", champs["champion_mape"].median(), *[wins[n] for n in names]]],
            ["resource", "champion MAPE med", *[f"wins {n}" for n in names]],
        )
    )

    # trust: the MAPE rule against the capacity rule; near = the champion's error could move it across
    low_new = champs["trust"].eq("low")
    low_old = mape_rule["trust"].eq("low")
    print("\nTrust (low share):\n")
    print(
        _md(
            [
                [
                    "MAPE rule (champion MAPE > 20)",
                    low_old.mean(),
                    int((low_old & low_new).sum()),
                    int((low_old & ~low_new).sum()),
                ],
                ["capacity rule (error vs headroom)", low_new.mean(), int(low_new.sum()), 0],
            ],
            ["rule", "low share", "low and near the threshold", "low and far from it"],
        )
    )
    checks = targets(scores["golden record"], anchor, "golden record against stock Prophet")
    return {"scores": scores, "checks": checks, "wins": wins, "cpu": cpu, "n_series": n_series}


# --- pooled over several fleets per family (issue 26) -------------------------------------------

# (servers, seed): five distinct fleets per family. Fleets of one seed share their first servers
# (40 servers of seed 0 are the first 40 of 60), so each seed is counted once.
FLEETS = ((60, 0), (60, 1), (60, 2), (60, 3), (60, 4))
WINDOWS = ForecastConfig().windows  # set from --windows
SHIPPED = "golden record (shipped: pooled pick, weighted, margin, cap of fitted)"
CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "accuracy_cache")


def _cache_path(tag: str, key: str) -> str:
    return os.path.join(CACHE, f"{tag}_{key}.pkl")


def cached(tag: str, key: str, fn):
    """``fn()`` pickled under ``CACHE`` the first time, read back after."""
    import pickle

    path = _cache_path(tag, key)
    if os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    out = fn()
    os.makedirs(CACHE, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(out, f)
    return out


def _hash(df: pd.DataFrame) -> str:
    import hashlib

    return hashlib.sha1(pd.util.hash_pandas_object(df, index=False).values.tobytes()).hexdigest()[
        :16
    ]


def install_raw_cache(prophet_mode: str = "warm") -> None:
    """Each engine's ``predict`` (raw rows with every origin, and its CPU seconds) cached per fleet,
    so variants of the tournament re-run in seconds. ``prophet_mode``: ``warm`` (each window's fit
    starts from the previous origin's, as shipped) or ``cold`` (Prophet's own start)."""
    from capacity_assets.forecasting.engines import prophet, registry

    prophet.WINDOW_WARM_START = prophet_mode == "warm"
    for name in ("prophet", "challenger", "ets", "naive"):
        mod = registry.engine(name)
        real = getattr(mod, "_uncached_predict", mod.predict)
        mod._uncached_predict = real

        def predict(history, cfg, log=None, _real=real, _name=name):
            tag = f"{_name}{'_' + prophet_mode if _name == 'prophet' else ''}"
            key = f"{_hash(history)}_{cfg.seed}_w{'-'.join(map(str, cfg.windows))}"

            def fit():
                c = _cpu()
                rows, failed = _real(history, cfg, log=log)
                return rows, failed, _cpu() - c

            rows, failed, seconds = cached(tag, key, fit)
            RAW_CPU[_name] = RAW_CPU.get(_name, 0.0) + seconds
            return rows, failed

        mod.predict = predict


RAW_CPU: dict[str, float] = {}  # engine -> CPU seconds of its (cached) fits in this process


def tallies(fc: pd.DataFrame, hidden: pd.DataFrame, end, threshold: float, risk_days: int) -> dict:
    """Sums that pool across fleets: absolute errors and actuals, days inside the bounds (per
    resource), risk TP/FP/FN."""
    m = held_out(fc, hidden)
    err = (m["y"] - m["yhat"]).abs()
    inside = (m["y"] >= m["yhat_lower"]) & (m["y"] <= m["yhat_upper"])
    out = {
        "abs_err": float(err.sum()),
        "abs_y": float(m["y"].abs().sum()),
        "days": len(m),
        "inside": int(inside.sum()),
        "above": int((m["y"] > m["yhat_upper"]).sum()),
    }
    for r in RESOURCES:
        mine = m["resource"] == r
        out[f"days_{r}"], out[f"inside_{r}"] = int(mine.sum()), int(inside[mine].sum())
    risk = risk_calls(fc, hidden, end, threshold, risk_days)
    out.update(tp=risk["tp"], fp=risk["fp"], fn=risk["fn"])
    return out


def _pooled(t: dict) -> dict:
    tp, fp, fn = t["tp"], t["fp"], t["fn"]
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    return {
        "wape": t["abs_err"] / t["abs_y"] * 100,
        "coverage": t["inside"] / t["days"],
        "above": t["above"] / t["days"],
        **{f"cov_{x}": t[f"inside_{x}"] / max(t[f"days_{x}"], 1) for x in RESOURCES},
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": p,
        "recall": r,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
    }


def fleet_tables(family: str, servers: int, seed: int, threshold: float, risk_days: int) -> dict:
    """Every forecast the report compares on one fleet: the contenders, the combinations, the golden
    records before and after issue 26, stock Prophet; and the tallies of each."""
    from capacity_assets.forecasting.engines.registry import run as run_engine

    cfg = ForecastConfig(seed=seed, windows=WINDOWS)
    data = load_family(family, servers, seed, cfg)
    history, hidden, end, act = data["history"], data["hidden"], data["end"], data["actuals"]
    RAW_CPU.clear()
    res = {n: run_engine(n, history, cfg) for n in FITTED}
    before = {n: r[r["split"] != "window"] for n, r in res.items()}  # the backtest alone
    power = combination.WEIGHT_POWER
    combos = {}
    for p in (None, 2.0, power):  # None: the plain mean of every contender (before issue 26)
        combination.WEIGHT_POWER = p
        combos[p] = combination.combine(res, act, cfg)
    combination.WEIGHT_POWER = power
    # CAPACITY_WINDOWS=none: the same fits without their window rows (the backtest and the refit
    # do not depend on the windows), weighted on the backtest alone
    combo_alone = combination.combine(before, act, cfg)
    stock = cached(
        f"stock_{family}{servers}s{seed}",
        _hash(data["history_obs"]),
        lambda: stock_prophet(data["history_obs"], cfg),
    )
    actb = act.assign(batch="b")
    margin = tournament.COMBINATION_MARGIN

    def golden(results: dict, combo: pd.DataFrame, upper: str, pick_margin=margin) -> pd.DataFrame:
        if results is before:
            combo = combo[combo["split"] != "window"]
        by = {n: r.assign(batch="b") for n, r in {**results, "combination": combo}.items()}
        tournament.COMBINATION_MARGIN = pick_margin
        try:
            champs = tournament.champions(by, actb, threshold=threshold, risk_days=risk_days)
        finally:
            tournament.COMBINATION_MARGIN = margin
        rule = upper.split("+")[0]
        out = tournament.golden_record(
            by,
            champs,
            pd.Timestamp.now(),
            "bench",
            upper=rule if rule != "all" else "champion",
            actuals=actb,
        )
        if upper.endswith("+consensus"):  # calibrated, then capped as shipped
            out = tournament._consensus_upper(out, by)
        if (
            upper == "all"
        ):  # the cap before issue 26: the median of every contender, combination too
            out = _consensus_of_all(out, by)
        return out.assign(split="future")

    tables = {
        **{n: res[n] for n in FITTED},
        "combination: plain mean (before)": combos[None],
        "combination: weights MAPE^-2": combos[2.0],
        f"combination: weights MAPE^-{power:g} (shipped)": combos[power],
        "golden before (backtest pick, plain mean, cap of all)": golden(
            before, combos[None], "all", 0.0
        ),
        "golden: pooled pick, plain mean, cap of all": golden(res, combos[None], "all", 0.0),
        "golden: pooled pick, weighted, cap of fitted": golden(
            res, combos[power], "consensus", 0.0
        ),
        "golden: + margin, champion's own bounds": golden(res, combos[power], "champion"),
        "golden: + margin, cap of all": golden(res, combos[power], "all"),
        "golden: + margin, calibrated": golden(res, combos[power], "calibrated"),
        "golden: + margin, calibrated, then cap of fitted": golden(
            res, combos[power], "calibrated+consensus"
        ),
        "golden, CAPACITY_WINDOWS=none (same rules, backtest alone)": golden(
            before, combo_alone, "consensus"
        ),
        SHIPPED: golden(res, combos[power], "consensus"),
        "stock prophet": stock,
    }
    n_series = history.groupby(KEY).ngroups
    return {
        "tallies": {n: tallies(fc, hidden, end, threshold, risk_days) for n, fc in tables.items()},
        "cpu": dict(RAW_CPU),
        "n_series": n_series,
    }


def _consensus_of_all(golden: pd.DataFrame, by: dict) -> pd.DataFrame:
    """The upper-bound cap as it was before issue 26: the median of every contender's upper bound,
    the combination's included."""
    cols = ["yhat_upper", "demand_upper"]
    fut = pd.concat(
        [r.loc[r["split"] == "future", ["batch", *KEY, "ds", *cols]] for r in by.values()]
    )
    median = fut.groupby(["batch", *KEY, "ds"])[cols].median().add_prefix("m_").reset_index()
    out = golden.merge(median, on=["batch", *KEY, "ds"], how="left")
    for c, base in (("yhat_upper", "yhat"), ("demand_upper", "demand")):
        out[c] = np.maximum(np.minimum(out[c], out[f"m_{c}"].fillna(out[c])), out[base])
    return out.drop(columns=["m_yhat_upper", "m_demand_upper"])


def run_pooled(family: str, fleets, threshold: float, risk_days: int) -> dict:
    """Every table of ``fleet_tables`` pooled over ``fleets``; prints the family's report."""
    total: dict[str, dict] = {}
    cpu: dict[str, float] = {}
    n_series = 0
    for servers, seed in fleets:
        out = fleet_tables(family, servers, seed, threshold, risk_days)
        n_series += out["n_series"]
        for name, t in out["tallies"].items():
            acc = total.setdefault(name, dict.fromkeys(t, 0))
            for k, v in t.items():
                acc[k] += v
        for name, sec in out["cpu"].items():
            cpu[name] = cpu.get(name, 0.0) + sec
        g = _pooled(out["tallies"][SHIPPED])
        st = _pooled(out["tallies"]["stock prophet"])
        print(
            f"{family}{servers}s{seed}: golden WAPE/stock {g['wape'] / st['wape']:.3f}, coverage "
            f"{g['coverage']:.3f}, risk {g['tp']}/{g['fp']}/{g['fn']} (stock "
            f"{st['tp']}/{st['fp']}/{st['fn']})",
            flush=True,
        )
    scores = {n: _pooled(t) for n, t in total.items()}
    anchor = scores["stock prophet"]
    best_single = min(scores[n]["wape"] for n in FITTED)
    print(
        f"\n## {family}: {FAMILIES[family]}\n\n{len(fleets)} fleets "
        f"({', '.join(f'{s} servers seed {d}' for s, d in fleets)}), {n_series} series; pooled: "
        "WAPE = all absolute errors / all actuals, coverage and risk counts summed\n"
    )
    rows = [
        [
            n,
            s["wape"],
            s["wape"] / anchor["wape"],
            s["wape"] / best_single,
            s["coverage"],
            *[s[f"cov_{r}"] for r in RESOURCES],
            f"{s['tp']}/{s['fp']}/{s['fn']}",
            s["precision"],
            s["recall"],
            s["f1"],
        ]
        for n, s in scores.items()
    ]
    print(
        _md(
            rows,
            [
                "forecast",
                "WAPE",
                "/ stock",
                "/ best single",
                "coverage",
                *[f"cov {r}" for r in RESOURCES],
                "risk TP/FP/FN",
                "precision",
                "recall",
                "F1",
            ],
        )
    )
    print("\nCPU of the fits (when they were computed; CmdStan included), ms per series:\n")
    print(
        _md(
            [[n, 1000 * sec / n_series] for n, sec in cpu.items()]
            + [["all engines", 1000 * sum(cpu.values()) / n_series]],
            ["engine", "ms CPU/series"],
        )
    )
    checks = targets(scores[SHIPPED], anchor, "pooled", best_single)
    return {"scores": scores, "checks": checks, "cpu": cpu, "n_series": n_series}


def main(argv=None) -> int:
    global FITTED, WINDOWS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="demo,wild", help="comma-separated: demo, wild")
    ap.add_argument(
        "--fleets",
        default=",".join(f"{n}x{s}" for n, s in FLEETS),
        help="SERVERSxSEED,...: the fleets pooled per family (fits cached under benchmarks/out/)",
    )
    ap.add_argument("--one", action="store_true", help="one fleet (--servers, --seed), uncached")
    ap.add_argument("--servers", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=95.0)
    ap.add_argument("--risk-days", type=int, default=90)
    ap.add_argument(
        "--prophet-start", default="warm", help="warm or cold: how Prophet's window fits start"
    )
    ap.add_argument(
        "--engines",
        default=CapacitySettings().engines,
        help="fitted contenders, as CAPACITY_ENGINES (default: the pipeline's default)",
    )
    ap.add_argument(
        "--windows",
        default=",".join(map(str, WINDOWS)),
        help="window origins in months before the end, as CAPACITY_WINDOWS ('' = backtest alone)",
    )
    args = ap.parse_args(argv)
    WINDOWS = tuple(int(v) for v in args.windows.split(",") if v.strip())
    FITTED = CapacitySettings(engines=args.engines).contenders
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    families = [f.strip() for f in args.family.split(",") if f.strip()]
    ok = True
    if args.one:
        cfg = ForecastConfig(seed=args.seed)
        for family in families:
            out = run_family(family, args.servers, args.seed, cfg, args.threshold, args.risk_days)
            ok &= all(out["checks"].values())
        return 0 if ok else 1
    install_raw_cache(args.prophet_start)
    logging.disable(logging.WARNING)
    fleets = [tuple(int(v) for v in f.split("x")) for f in args.fleets.split(",")]
    for family in families:  # the held-out family last
        out = run_pooled(family, fleets, args.threshold, args.risk_days)
        ok &= all(out["checks"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
