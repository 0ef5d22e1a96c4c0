"""The engines, and the ending every contender shares.

An engine module only fits and predicts: ``predict(history, cfg, log) -> (rows, failed)`` with
RAW_RESULTS rows (backtest rows from a fit on all but the last ``backtest_months``, window rows
from fits at the later origins of ``cfg.windows``, future rows from a refit on all history; an
``origin`` column gives each row's fit's last day) and ``{(server_id, resource): reason}`` for the series it could not
fit. ``run`` owns everything after that, so no engine repeats it and none can get it wrong: the
seasonal-naive fallback for failed or non-finite series, split-conformal calibration of the future
bounds on the backtest, the unclipped ``demand`` columns, clipping to 0–100 and the contract.

Adding a contender is one module with ``predict`` and one line in ``ENGINES``; the asset graph
makes a ``<name>_results`` asset, the tournament scores it and the dashboard colours it. A
*combiner* (``combiner=True``, the combination) fits nothing: its module's ``combine(results_by_model,
actuals, cfg)`` builds its rows from the fitted contenders' (``CONTENDERS``) results, and the
tournament scores it like the others (``TOURNAMENT``).
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import pandas as pd

from capacity_assets.forecasting.engines import intervals
from capacity_assets.forecasting.engines.base import ForecastConfig, with_origin
from capacity_assets.schema import ENGINE_RESULTS, RAW_RESULTS, SERIES_KEY, conform, empty


@dataclass(frozen=True)
class Engine:
    module: str
    description: str
    colour: str  # one colour per engine from the tournament bars to the deep dive
    contender: bool = True  # takes part in the tournament (naive is the baseline and the fallback)
    combiner: bool = (
        False  # built from the fitted contenders' results (``module.combine``), not by ``run``
    )


ENGINES: dict[str, Engine] = {
    "prophet": Engine(
        "capacity_assets.forecasting.engines.prophet",
        "Prophet (weekly + yearly seasonality) on Prophet's own Stan model.",
        "#2563eb",
    ),
    "challenger": Engine(
        "capacity_assets.forecasting.engines.challenger",
        "XGBoost challenger: a global model per resource on a damped per-series trend.",
        "#f59e0b",
    ),
    "ets": Engine(
        "capacity_assets.forecasting.engines.ets",
        "ETS (statsforecast AutoETS, weekly season): local level and trend, its own intervals.",
        "#10b981",
    ),
    "combination": Engine(
        "capacity_assets.forecasting.combination",
        "Combination: per series, the fitted contenders' forecasts weighted by their error over "
        "every origin (MAPE to the power -4), bounds from their mixture.",
        "#8b5cf6",
        combiner=True,
    ),
    "naive": Engine(
        "capacity_assets.forecasting.engines.naive",
        "Seasonal naive: next week looks like the last observed week.",
        "#94a3b8",
        contender=False,
    ),
}
# registry order decides ties in the tournament
CONTENDERS: tuple[str, ...] = tuple(
    n for n, e in ENGINES.items() if e.contender and not e.combiner
)  # fitted by ``run``
COMBINERS: tuple[str, ...] = tuple(
    n for n, e in ENGINES.items() if e.contender and e.combiner
)  # ``combine`` them
TOURNAMENT: tuple[str, ...] = CONTENDERS + COMBINERS  # every contender the tournament scores
FALLBACK = "naive"
_RAW = {**RAW_RESULTS, "origin": "datetime64[ns]"}  # an engine's rows, with the fit's last day


def engine(name: str) -> ModuleType:
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; known engines: {', '.join(ENGINES)}")
    return importlib.import_module(ENGINES[name].module)


def combine(
    name: str, results_by_model: dict[str, pd.DataFrame], actuals: pd.DataFrame, cfg: ForecastConfig
) -> pd.DataFrame:
    """A combiner's ENGINE_RESULTS rows from the fitted contenders' results (see ``combination``)."""
    if name not in COMBINERS:
        raise ValueError(f"{name!r} is not a combiner; combiners: {', '.join(COMBINERS)}")
    return engine(name).combine(results_by_model, actuals, cfg)


def _split_bad(
    rows: pd.DataFrame, failed: dict, history: pd.DataFrame
) -> tuple[pd.DataFrame, dict]:
    """Series with a non-finite value or without future rows join the failed ones."""
    failed = dict(failed)
    values = rows[["yhat", "yhat_lower", "yhat_upper"]].to_numpy(float)
    bad = rows.loc[~np.isfinite(values).all(axis=1), SERIES_KEY]
    for key in set(map(tuple, bad.to_numpy().tolist())):
        failed.setdefault(key, "non-finite prediction")
    with_future = set(
        map(tuple, rows.loc[rows["split"] == "future", SERIES_KEY].to_numpy().tolist())
    )
    for key in (
        set(map(tuple, history[SERIES_KEY].drop_duplicates().to_numpy().tolist())) - with_future
    ):
        failed.setdefault(key, "no prediction")
    if failed:
        keys = pd.MultiIndex.from_frame(rows[SERIES_KEY])
        rows = rows[~keys.isin(list(failed))]
    return rows, failed


def finish(
    rows: pd.DataFrame,
    actuals: pd.DataFrame,
    cfg: ForecastConfig,
    model: str,
    calibrate: bool = True,
) -> pd.DataFrame:
    """Calibrated, clipped ENGINE_RESULTS rows from an engine's raw rows."""
    if rows.empty:
        return empty(ENGINE_RESULTS)
    rows = with_origin(rows)
    backtest, future = rows[rows["split"] == "backtest"], rows[rows["split"] == "future"]
    if calibrate:
        future = intervals.calibrate(future, backtest, actuals, cfg.interval)
    # window rows keep their own bounds: they serve the pick and the golden record's calibration
    out = pd.concat([backtest, rows[rows["split"] == "window"], future], ignore_index=True)
    out = out.assign(
        model=model,
        demand=out["yhat"].clip(lower=0.0),
        demand_upper=np.maximum(out["yhat_upper"], out["yhat"]).clip(lower=0.0),
    )
    return conform(intervals.clip_utilisation(out), ENGINE_RESULTS)


def run(name: str, history: pd.DataFrame, cfg: ForecastConfig, log=None) -> pd.DataFrame:
    """One engine over a batch's history (server_id, resource, ds, y): ENGINE_RESULTS rows for every
    series, the ones it could not fit from the seasonal-naive fallback, marked ``<name>:fallback``."""
    log = log or logging.getLogger(__name__)
    if name in COMBINERS:
        raise ValueError(
            f"{name!r} combines the other contenders' results: call combine({name!r}, ...)"
        )
    if history.empty:
        return empty(ENGINE_RESULTS)
    started = time.monotonic()
    rows, failed = engine(name).predict(history, cfg, log=log)
    rows, failed = _split_bad(conform(with_origin(rows), _RAW), failed, history)
    parts = [finish(rows, history[SERIES_KEY + ["ds", "y"]], cfg, name)]
    if failed:
        for (server, resource), reason in sorted(failed.items()):
            log.warning(f"{name}: {server}/{resource} falls back to seasonal naive: {reason}")
        keys = pd.MultiIndex.from_frame(history[SERIES_KEY])
        naive_rows, _ = engine(FALLBACK).predict(history[keys.isin(list(failed))], cfg, log=log)
        # the naive bounds are its own error quantiles, honest as they are: not rescaled
        parts.append(
            finish(
                conform(with_origin(naive_rows), _RAW),
                history,
                cfg,
                f"{name}:fallback",
                calibrate=False,
            )
        )
    out = (
        pd.concat([p for p in parts if len(p)], ignore_index=True)
        if any(len(p) for p in parts)
        else empty(ENGINE_RESULTS)
    )
    n = history[SERIES_KEY].drop_duplicates().shape[0]
    log.info(
        f"{name}: {n} series in {time.monotonic() - started:.1f} s, {n - len(failed)} fitted, "
        f"{len(failed)} fallbacks"
    )
    return conform(out, ENGINE_RESULTS).sort_values(
        SERIES_KEY + ["split", "origin", "ds"], kind="stable", ignore_index=True
    )
