"""How the bounds are calibrated: coverage, WAPE and risk calls per variant of ``intervals.calibrate``.

    PYTHONPATH=.:benchmarks .venv/bin/python benchmarks/calibration_variants.py [--variants two-sided,per-tail]

On the ten fleets of benchmarks/risk_rules.py (40 servers x seeds 0-2 and 60 servers x seeds 0-1,
per family), every engine's raw fits (before calibration) and stock Prophet are computed once and
cached under benchmarks/out/raw_cache/; each variant (``VARIANTS``) then recalibrates every contender, rebuilds the
combination, the tournament and the published golden record, and is scored on the hidden months as
benchmarks/accuracy.py scores it. Prints per fleet and pooled per family: coverage, share of hidden
days above the upper bound, WAPE / stock, risk TP/FP/FN and F1 (stock Prophet's beside it).
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
import ets_variants  # noqa: E402
import pandas as pd  # noqa: E402

from capacity_assets.forecasting import combination, tournament  # noqa: E402
from capacity_assets.forecasting.engines import intervals, registry  # noqa: E402
from capacity_assets.forecasting.engines.base import ForecastConfig  # noqa: E402

CACHE = os.path.join(HERE, "out", "raw_cache")
FLEETS = [(f, 40, s) for f in ("demo", "wild") for s in (0, 1, 2)] + [
    (f, 60, s) for f in ("demo", "wild") for s in (0, 1)
]
FITTED = ("prophet", "challenger", "ets")
_SHIPPED = intervals.calibrate


def per_tail(future, backtest, actuals, interval):
    """Each bound scaled to its own one-sided ``(1 + interval) / 2`` conformal quantile (the shipped
    rule scales both by one two-sided quantile of |error|). Done with the shipped code: pushing the
    other bound far away leaves that side's scores near zero, so the shipped quantile at the
    one-sided level is this side's."""
    q, far = (1 + interval) / 2, 1e6
    up = _SHIPPED(future, backtest.assign(yhat_lower=backtest["yhat"] - far), actuals, q)[
        "yhat_upper"
    ]
    lo = _SHIPPED(future, backtest.assign(yhat_upper=backtest["yhat"] + far), actuals, q)[
        "yhat_lower"
    ]
    return future.assign(yhat_lower=lo, yhat_upper=up)


VARIANTS = {"two-sided": _SHIPPED, "per-tail": per_tail}


def _cached(tag: str, fn):
    return ets_variants.cached(tag, "raw", fn, folder=CACHE)


def install_raw_cache():
    """Cache each engine's ``predict`` (raw rows, before the registry calibrates them)."""
    for name in (*FITTED, "naive"):
        mod = registry.engine(name)
        real = mod.predict

        def predict(history, cfg, log=None, _real=real, _name=name):
            return _cached(
                f"{_name}_{ets_variants._hash(history)}_{cfg.seed}",
                lambda: _real(history, cfg, log=log),
            )

        mod.predict = predict


def score_fleet(data: dict, cfg: ForecastConfig, stock: pd.DataFrame) -> dict:
    hist, hidden, end = data["history"], data["hidden"], data["end"]
    res = {n: registry.run(n, hist, cfg) for n in FITTED}
    res["combination"] = combination.combine(res, data["actuals"], cfg)
    by = {n: r.assign(batch="b") for n, r in res.items()}
    champs = tournament.champions(
        by, data["actuals"].assign(batch="b"), threshold=95.0, risk_days=90
    )
    gold = tournament.golden_record(by, champs, pd.Timestamp.now(), "x", upper="consensus").assign(
        split="future"
    )
    out = {}
    for name, fc in {"golden": gold, "stock": stock}.items():
        acc, risk = A.accuracy(fc, hidden), A.risk_calls(fc, hidden, end, 95.0, 90)
        m = A.held_out(fc, hidden)
        out[name] = dict(
            inside=int(((m.y >= m.yhat_lower) & (m.y <= m.yhat_upper)).sum()),
            above=int((m.y > m.yhat_upper).sum()),
            days=len(m),
            abs_err=float((m.y - m.yhat).abs().sum()),
            abs_y=float(m.y.abs().sum()),
            tp=risk["tp"],
            fp=risk["fp"],
            fn=risk["fn"],
            cov=acc["coverage"],
        )
    return out


def _f1(tp, fp, fn):
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="two-sided,per-tail")
    args = ap.parse_args()
    os.makedirs(CACHE, exist_ok=True)
    install_raw_cache()
    rows = []
    for fam, servers, seed in FLEETS:
        cfg = ForecastConfig(seed=seed)
        data = A.load_family(fam, servers, seed, cfg)
        stock = _cached(
            f"stock_{fam}{servers}s{seed}",
            lambda data=data, cfg=cfg: A.stock_prophet(data["history_obs"], cfg),
        )
        for variant in args.variants.split(","):
            intervals.calibrate = VARIANTS[variant]
            s = score_fleet(data, cfg, stock)
            for who, v in s.items():
                rows.append(
                    dict(
                        family=fam,
                        fleet=f"{fam}{servers}s{seed}",
                        variant=variant if who == "golden" else "stock",
                        **v,
                    )
                )
            g, st = s["golden"], s["stock"]
            print(
                f"{fam}{servers}s{seed} {variant:10s} cov {g['inside'] / g['days']:.3f} above {g['above'] / g['days']:.3f} "
                f"WAPE/stock {g['abs_err'] / st['abs_err']:.3f} risk {g['tp']}/{g['fp']}/{g['fn']} F1 {_f1(g['tp'], g['fp'], g['fn']):.3f} "
                f"(stock {st['tp']}/{st['fp']}/{st['fn']} F1 {_f1(st['tp'], st['fp'], st['fn']):.3f})",
                flush=True,
            )
    df = pd.DataFrame(rows).drop_duplicates(["fleet", "variant"])
    print("\nPooled over the fleets of each family:\n")
    print(
        "| family | variant | coverage | above upper | WAPE / stock | risk TP/FP/FN | F1 |\n|---|---|---:|---:|---:|---|---:|"
    )
    for (fam, variant), g in df.groupby(["family", "variant"], sort=False):
        st = df[(df.family == fam) & (df.variant == "stock")]
        t = g.sum(numeric_only=True)
        print(
            f"| {fam} | {variant} | {t.inside / t.days:.3f} | {t.above / t.days:.3f} | {t.abs_err / st.abs_err.sum():.3f} | "
            f"{int(t.tp)}/{int(t.fp)}/{int(t.fn)} | {_f1(t.tp, t.fp, t.fn):.3f} |"
        )


if __name__ == "__main__":
    main()
