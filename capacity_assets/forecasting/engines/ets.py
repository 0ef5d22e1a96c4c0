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

The batch: every series is laid on one daily grid (``daily.grid``) and every fit of one horizon
goes to one ``StatsForecast.forecast`` call (the backtest fits, each window's fits
(``ForecastConfig.windows``) and the refits on all history: one call each when the batch's series
end on one day). A window's fit that fails is left out; the series keeps its backtest and future.
That call still fits series one by one (its loop runs the same ``AutoETS.forecast``, so the
forecasts are the per-series ones), but the frames, sorts and reindexing this engine built
around each series are gone; what is left is the fits themselves, two thirds of them in statsforecast's compiled optimiser (``benchmarks/README.md``,
"Fit at the floor"). statsforecast computes the intervals of the seasonal models with a term that
depends on the whole horizon, not only on the step, so a call is made per horizon rather than one
long horizon cut short. Series known to be unfittable (too short, constant) never reach the call;
if the call still fails, that call's fits run one by one (``_fit_forecast``) so one bad series
costs only itself.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import pandas as pd

from capacity_assets.forecasting.engines import daily
from capacity_assets.forecasting.engines.base import ForecastConfig, window_configs
from capacity_assets.schema import RAW_RESULTS, empty

NAME = "ets"
SEASON = 7
MODEL = "AAA"
DAMPED = True
WINDOW_DAYS = 210
MIN_POINTS = 4 * SEASON  # fewer observations in a fit: the naive fallback


def _model():
    from statsforecast.models import AutoETS  # heavy import (~1-2 s), only when the engine runs

    return AutoETS(season_length=SEASON, model=MODEL, damped=DAMPED, alias=NAME)


def _unfit(y: np.ndarray) -> str | None:
    """Why a fit's window cannot be fitted, before trying."""
    if len(y) < MIN_POINTS:
        return f"only {len(y)} observations"
    if np.ptp(y) < 1e-9:
        return "constant series"
    return None


def _bounded(mean, lo, hi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean, lo, hi = (np.asarray(v, float) for v in (mean, lo, hi))
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("non-finite forecast")
    return mean, np.minimum(lo, mean), np.maximum(hi, mean)


def _fit_forecast(
    y: np.ndarray, h: int, interval: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One window alone: the fallback when a batch call fails."""
    y = y[-WINDOW_DAYS:]
    reason = _unfit(y)
    if reason:
        raise ValueError(reason)
    level = int(round(interval * 100))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # near-singular fits warn; the finiteness check decides
        fc = _model().forecast(y=y.astype(float), h=h, level=[level])
    return _bounded(fc["mean"], fc[f"lo-{level}"], fc[f"hi-{level}"])


def _one_by_one(windows: list[np.ndarray], h: int, interval: float) -> list:
    out = []
    for y in windows:
        try:
            out.append(_fit_forecast(y, h, interval))
        except Exception as exc:  # noqa: BLE001 - one bad series never fails the batch
            out.append(str(exc) or type(exc).__name__)
    return out


def _batch(windows: list[np.ndarray], h: int, interval: float, log) -> list:
    """(mean, lower, upper) or the reason it failed, for every window, in one call."""
    from statsforecast import StatsForecast

    level = int(round(interval * 100))
    lengths = np.array([len(y) for y in windows])
    frame = pd.DataFrame(
        {
            "unique_id": np.repeat(np.arange(len(windows)), lengths),
            "ds": np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths),
            "y": np.concatenate(windows).astype(float),
        }
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # near-singular fits warn; the finiteness check decides
            fc = StatsForecast(models=[_model()], freq=1, n_jobs=1).forecast(
                h=h, df=frame, level=[level]
            )
    except Exception as exc:  # noqa: BLE001 - a series that fails inside the call
        log.info(f"ets: the batch call failed ({exc!r}); fitting its {len(windows)} series alone")
        return _one_by_one(windows, h, interval)
    order = np.argsort(fc["unique_id"].to_numpy(), kind="stable")
    mean, lo, hi = (
        fc[col].to_numpy(float)[order].reshape(len(windows), h)
        for col in (NAME, f"{NAME}-lo-{level}", f"{NAME}-hi-{level}")
    )
    out = []
    for k in range(len(windows)):
        try:
            out.append(_bounded(mean[k], lo[k], hi[k]))
        except ValueError as exc:
            out.append(str(exc))
    return out


def predict(history: pd.DataFrame, cfg: ForecastConfig, log=None) -> tuple[pd.DataFrame, dict]:
    """Raw backtest and future rows of every series ETS can fit, and why it could not fit the rest."""
    log = log or logging.getLogger(__name__)
    cpu0 = time.process_time()
    grid = daily.grid(history)
    failed: dict = {}
    fits: dict[int, list] = {}  # horizon -> [(series, split, first day, window)]
    fit_day: dict[int, set] = {}  # series -> first days of the fits whose failure fails it
    origins = [(split, grid.train_days(c)) for split, c in window_configs(cfg)]
    for i, key in enumerate(grid.keys):
        y, first, last = grid.values(i), int(grid.first[i]), int(grid.last[i])
        if grid.duplicated[i]:
            failed[key] = "duplicate days"
            continue
        if np.isnan(y).all():
            failed[key] = "no observations"
            continue
        plan = [("future", last + 1, y[-WINDOW_DAYS:], cfg.horizon_days)]
        for split, train_days in origins[::-1]:  # the backtest ends up first
            n_train = int(train_days[i])
            if n_train and len(y) - n_train and (split == "backtest" or not _unfit(y[:n_train])):
                plan.insert(
                    0, (split, first + n_train, y[:n_train][-WINDOW_DAYS:], len(y) - n_train)
                )
        reason = next((r for r in (_unfit(w) for _, _, w, _ in plan) if r), None)
        if reason:
            failed[key] = reason
            continue
        for split, day0, window, h in plan:
            fits.setdefault(h, []).append((i, split, day0, window))
        fit_day[i] = {day0 for split, day0, _, _ in plan if split != "window"}

    done: dict[tuple[int, int], object] = {}
    for h, items in fits.items():
        for (i, _split, day0, _), result in zip(
            items, _batch([w for *_, w in items], h, cfg.interval, log)
        ):
            done[(i, day0)] = result
    for (i, day0), result in sorted(done.items()):  # the earliest origin first: its reason wins
        if isinstance(result, str) and day0 in fit_day[i]:
            failed.setdefault(grid.keys[i], result)

    parts = {c: [] for c in ("series", "day", "yhat", "yhat_lower", "yhat_upper", "split", "h")}
    for h, items in fits.items():
        for i, split, day0, _ in items:
            if grid.keys[i] in failed or isinstance(done[(i, day0)], str):
                continue  # a window that failed is left out; the series keeps its other fits
            mean, lo, hi = done[(i, day0)]
            parts["series"].append(np.full(h, i))
            parts["day"].append(day0 + np.arange(h))
            parts["yhat"].append(mean)
            parts["yhat_lower"].append(lo)
            parts["yhat_upper"].append(hi)
            parts["split"].append(np.full(h, split))
            parts["h"].append(np.arange(1, h + 1))
    log.info(
        "ets: %d series, %d not fitted, %.0f ms CPU/series",
        len(grid.keys),
        len(failed),
        1000 * (time.process_time() - cpu0) / max(len(grid.keys), 1),
    )
    if not parts["series"]:
        return empty(RAW_RESULTS), failed
    series = np.concatenate(parts["series"])
    keys = np.array(grid.keys, dtype=object).reshape(-1, 2)
    rows = pd.DataFrame(
        {
            "server_id": keys[series, 0],
            "resource": keys[series, 1],
            "ds": daily.timestamps(np.concatenate(parts["day"])),
            "yhat": np.concatenate(parts["yhat"]),
            "yhat_lower": np.concatenate(parts["yhat_lower"]),
            "yhat_upper": np.concatenate(parts["yhat_upper"]),
            "split": np.concatenate(parts["split"]),
            "origin": daily.timestamps(np.concatenate(parts["day"]) - np.concatenate(parts["h"])),
        }
    )
    return rows, failed
