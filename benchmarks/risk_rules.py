"""Which upper bound should decide a risk call: the golden record's rules against stock Prophet.

    PYTHONPATH=.:benchmarks .venv/bin/python benchmarks/risk_rules.py

For five fleets per family (40 servers x seeds 0-2, 60 servers x seeds 0-1), the risk calls
(upper bound >= 95 within 90 days) of the champion's own upper bound, the published consensus
(capped at the median of every contender's upper bound) and other caps, scored on the hidden
months as benchmarks/accuracy.py scores them. Engine fits are cached under benchmarks/out/.
"""

import logging
import os
import pickle
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
logging.disable(logging.WARNING)
import accuracy as A
import ets_variants as D
import numpy as np
import pandas as pd

from capacity_assets.forecasting import combination, tournament
from capacity_assets.forecasting.engines.base import ForecastConfig

D.install_cache()
real = A.run


def run(name, history, cfg, log=None):
    if name == "ets":
        return _cached_ets(history, cfg)
    return real(name, history, cfg, log)


def _cached_ets(history, cfg):
    p = os.path.join(D.CACHE, f"ets_default_{D._hash(history)}.pkl")
    if os.path.exists(p):
        return pickle.load(open(p, "rb"))
    out = real("ets", history, cfg)
    pickle.dump(out, open(p, "wb"))
    return out


KEY = ["server_id", "resource"]
FITTED = ("prophet", "challenger", "ets")
fleets = [(f, 40, s) for f in ("demo", "wild") for s in (0, 1, 2)] + [
    (f, 60, s) for f in ("demo", "wild") for s in (0, 1)
]
rows = []
for fam, servers, seed in fleets:
    cfg = ForecastConfig(seed=seed)
    data = A.load_family(fam, servers, seed, cfg)
    hist, hidden, end = data["history"], data["hidden"], data["end"]
    res = {n: run(n, hist, cfg) for n in FITTED}
    res["combination"] = combination.combine(res, data["actuals"], cfg)
    stock = A.stock_prophet(data["history_obs"], cfg)
    by = {n: r.assign(batch="b") for n, r in res.items()}
    champs = tournament.champions(
        by, data["actuals"].assign(batch="b"), threshold=95.0, risk_days=90
    )
    base = tournament.golden_record(by, champs, pd.Timestamp.now(), "x", upper="champion").assign(
        split="future"
    )
    cons = tournament.golden_record(by, champs, pd.Timestamp.now(), "x", upper="consensus").assign(
        split="future"
    )
    fut = {n: r[r.split == "future"].set_index(KEY + ["ds"])["yhat_upper"] for n, r in res.items()}
    U = pd.DataFrame(fut)
    b = base.set_index(KEY + ["ds"])
    variants = {
        "stock": stock,
        "champion": base,
        "consensus": cons,
        "median_all": b.assign(
            yhat_upper=np.maximum(U.median(axis=1).reindex(b.index), b["yhat"])
        ).reset_index(),
        "median_fitted": b.assign(
            yhat_upper=np.maximum(
                np.minimum(b["yhat_upper"], U[list(FITTED)].median(axis=1).reindex(b.index)),
                b["yhat"],
            )
        ).reset_index(),
        "combination_upper": b.assign(
            yhat_upper=np.maximum(U["combination"].reindex(b.index), b["yhat"])
        ).reset_index(),
        "min_champ_comb": b.assign(
            yhat_upper=np.maximum(
                np.minimum(b["yhat_upper"], U["combination"].reindex(b.index)), b["yhat"]
            )
        ).reset_index(),
        "second_lowest": b.assign(
            yhat_upper=np.maximum(
                np.minimum(
                    b["yhat_upper"],
                    U.apply(
                        lambda r: np.sort(r.dropna().values)[1] if r.notna().sum() > 1 else r.max(),
                        axis=1,
                    ).reindex(b.index),
                ),
                b["yhat"],
            )
        ).reset_index(),
    }
    for name, fc in variants.items():
        fc = fc.assign(split="future") if "split" not in fc else fc
        r = A.risk_calls(fc, hidden, end, 95.0, 90)
        rows.append(
            dict(
                fleet=f"{fam}{servers}s{seed}",
                variant=name,
                tp=r["tp"],
                fp=r["fp"],
                fn=r["fn"],
                f1=round(r["f1"], 3),
                cov=round(A.accuracy(fc, hidden)["coverage"], 3) if name != "stock" else None,
            )
        )
    print(
        pd.DataFrame([r for r in rows if r["fleet"] == f"{fam}{servers}s{seed}"]).to_string(
            index=False
        ),
        flush=True,
    )
pd.DataFrame(rows).to_csv(os.path.join(os.path.dirname(D.CACHE), "risk_rules.csv"), index=False)
