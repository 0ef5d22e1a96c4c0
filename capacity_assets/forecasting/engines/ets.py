"""ETS contender: an exponential smoothing state-space model (Nixtla statsforecast's ``AutoETS``).

Why a third model: Prophet fits one global trend with changepoints and the challenger a robust
damped line; both weigh years of history. ETS is local by construction (its level and slope follow
the last weeks with exponentially fading memory) and has honest state-space prediction intervals.
It wins where the recent past says more than the long run: short histories, accelerating or
plateauing series, sawtooth leaks. On the fleet family the engines were not designed on it is what
brings the golden record's WAPE under 0.9 x stock Prophet's (``benchmarks/README.md``).

Settings: one fixed model, additive error, damped additive trend and additive weekly season
(``model="AAA"``, ``damped=True``, ``season_length=7``), fitted on the last ``WINDOW_DAYS`` of each
fit's data. The automatic search over error and trend forms (``model="ZZA"`` on 365 days, the
first version) cost three times the CPU for no better golden record on either fleet family; an
undamped trend carried over a 180-day horizon measured worse; a multiplicative season needs
strictly positive data. Windows of 120-365 days were measured on five fleets per family: 210 kept
the golden record's accuracy, shorter ones lost some on the held-out family (measured windows and
costs are in ``benchmarks/README.md``). Gap days are interpolated (ETS needs a regular series); a
series ETS cannot fit (too short, constant, a failed optimiser) is reported with its reason and
gets the registry's naive fallback. The 80 % intervals are ETS's own, rescaled on the backtest like
every engine's (``intervals.calibrate``).
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import pandas as pd

from capacity_assets.forecasting.engines.base import ForecastConfig, backtest_cutoff, future_dates
from capacity_assets.schema import RAW_RESULTS, SERIES_KEY, empty

NAME = "ets"
SEASON = 7
MODEL = "AAA"
DAMPED = True
WINDOW_DAYS = 210
MIN_POINTS = 4 * SEASON  # fewer observations in a fit: the naive fallback


def _fit_forecast(
    y: np.ndarray, h: int, interval: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from statsforecast.models import AutoETS  # heavy import (~1-2 s), only when the engine runs

    y = y[-WINDOW_DAYS:]
    if len(y) < MIN_POINTS:
        raise ValueError(f"only {len(y)} observations")
    if np.ptp(y) < 1e-9:
        raise ValueError("constant series")
    level = int(round(interval * 100))
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # statsforecast warns on near-singular fits; the check below decides
        fc = AutoETS(season_length=SEASON, model=MODEL, damped=DAMPED).forecast(
            y=y.astype(float), h=h, level=[level]
        )
    mean, lo, hi = (np.asarray(fc[k], float) for k in ("mean", f"lo-{level}", f"hi-{level}"))
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("non-finite forecast")
    return mean, np.minimum(lo, mean), np.maximum(hi, mean)


def _frame(key, ds, parts, split: str) -> pd.DataFrame:
    yhat, lo, hi = parts
    return pd.DataFrame(
        {
            "server_id": key[0],
            "resource": key[1],
            "ds": ds,
            "yhat": yhat,
            "yhat_lower": lo,
            "yhat_upper": hi,
            "split": split,
        }
    )


def predict(history: pd.DataFrame, cfg: ForecastConfig, log=None) -> tuple[pd.DataFrame, dict]:
    """Raw backtest and future rows of every series ETS can fit, and why it could not fit the rest."""
    log = log or logging.getLogger(__name__)
    cpu0 = time.process_time()
    rows, failed = [], {}
    groups = history.groupby(SERIES_KEY, sort=True)
    for key, g in groups:
        try:
            g = g.sort_values("ds")
            ds = pd.DatetimeIndex(g["ds"])
            full = pd.date_range(ds[0], ds[-1], freq="D")
            y = (
                pd.Series(g["y"].to_numpy(float), index=ds)
                .reindex(full)
                .interpolate(limit_direction="both")
            )
            if y.isna().all():
                raise ValueError("no observations")
            y = y.to_numpy()
            train = full <= backtest_cutoff(full[-1], cfg)
            bt_ds, fut = full[~train], future_dates(full[-1], cfg)
            parts = (
                [_frame(key, bt_ds, _fit_forecast(y[train], len(bt_ds), cfg.interval), "backtest")]
                if train.sum() and len(bt_ds)
                else []
            )
            parts.append(_frame(key, fut, _fit_forecast(y, len(fut), cfg.interval), "future"))
            rows.extend(parts)
        except Exception as exc:  # noqa: BLE001 - one bad series never fails the batch
            failed[key] = str(exc) or type(exc).__name__
    log.info(
        "ets: %d series, %d not fitted, %.0f ms CPU/series",
        groups.ngroups,
        len(failed),
        1000 * (time.process_time() - cpu0) / max(groups.ngroups, 1),
    )
    return (pd.concat(rows, ignore_index=True) if rows else empty(RAW_RESULTS)), failed
