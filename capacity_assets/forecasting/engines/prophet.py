"""Prophet engine: Prophet's own Stan model, fitted twice per series, without Prophet's Python overhead.

Settings (``SETTINGS``, also usable as ``prophet.Prophet(**prophet_kwargs())``):

* linear growth, then clipped to 0–100 %. Logistic growth with cap=100 would bend every rising series
  towards 100 % and so hide exactly the breach date capacity planning is after; it also needs a cap
  strictly above every observation and a slower trend (a per-changepoint loop in Stan and in
  predictions). A straight extrapolation clipped at 100 is the conservative reading.
* 25 changepoints over the first 90 % of the history (Prophet: 80 %), prior scale 0.05 (Prophet's).
  Fleet utilisation changes level and slope when workloads move; with 80 % the last ~7 months of a
  36-month history are forced onto one slope, with 90 % the last ~3.6 months, so a migration is
  followed sooner, while the default prior keeps the trend from chasing noise over a 180-day horizon.
* weekly seasonality (Fourier order 3) and yearly (order 10), additive, prior scale 10; yearly only
  with two years of history, Prophet's own rule (a yearly shape from one cycle extrapolates noise).

Fast path (``fit_map`` / ``predict_map``). Stock ``Prophet().fit()`` + ``predict()`` spends most of its
time outside the optimiser (cmdstanpy's pure-Python JSON of the feature matrix, Prophet's pandas
preprocessing and predict). Here the same compiled model (``prophet/stan_model/prophet_model.bin``)
gets exactly the data and initial values Prophet gives it (absmax scaling of y, t scaled to [0, 1],
Fourier features on days since the epoch, changepoints at Prophet's grid positions, Prophet's
``linear_growth_init`` with zero deltas and betas and sigma_obs = 1, L-BFGS with 10,000 iterations,
Newton on failure or T < 100), so the MAP estimate is Prophet's (a test compares the forecast with
stock Prophet's). Two deliberate departures, both far below what matters on a 0–100 % scale: features
and t are written with 9 significant digits (relative error 5e-10; shorter JSON for CmdStan to
parse), and L-BFGS stops at a relative gradient of 1e8·eps instead of 1e7·eps (what
``Prophet().fit(df, tol_rel_grad=1e8)`` does): fewer iterations, forecasts within 0.07 pp of the
default tolerance's. What differs is plumbing: the design (t, X, changepoints) depends only on the
dates, which a batch's series share, so its JSON text is built once and each series serialises only
its y; the binary runs under ``subprocess`` and the first data row of its CSV is parsed; predictions
are Prophet's formulas (piecewise-linear trend + X·beta, rescaled) in numpy. ``WORKERS`` threads each
carry a series, so CmdStan children run while Python prepares the next (threads only wait on
children; no process pool, which hangs under Dagster). Where the time goes is measured in
``benchmarks/README.md``.

Bounds: Prophet simulates 1,000 future trends (random slope changes as frequent and as large as in the
history) plus Gaussian noise and takes quantiles. We use the same two variance sources analytically:
noise ``sigma_obs`` plus the variance of that trend random walk after h steps
(``2 p b² dt² h(h+1)(2h+1)/6``, p = changepoints per step, b = mean |delta|), with a normal quantile.
The shape is Prophet's; its scale is then set per series by split-conformal calibration on the
backtest (``intervals.calibrate``, applied by the registry), which also corrects what both
approximations get wrong.

Not done, on purpose: a least-squares start (forecasts up to 0.86 pp away from stock Prophet's: the
posterior is flat along the Laplace-prior changepoint directions, so where L-BFGS stops depends on
where it starts). For the same reason the refit is not warm-started from the backtest fit
(``WARM_START``, off; measured for issue 25 with ``benchmarks/prophet_warm.py``, figures in
``benchmarks/README.md``): ``warm_init`` carries the backtest fit's curve onto the refit and saves
16-21 % of the refit's L-BFGS gradient evaluations, 3-6 ms of CPU a series (5-7 % of Prophet's),
but the refit then keeps more of the backtest's trend: pooled over five fleets per family, Prophet's
held-out WAPE got 1.4 % worse on the demo family and the golden record lost a true risk call on the
held-out one (a memory series rising to 100 %, upper bound 95.7 cold, 94.4 warm). Prophet's
documented warm start (the backtest parameters as they are, ``stan_init``) saves less on the demo
family and costs more evaluations on the other.

The window fits (``cfg.windows``, issue 26) do start from the previous origin's fit
(``WINDOW_WARM_START``): they only judge the contenders and weigh the combination, and against cold
starts they left the held-out accuracy of the golden record unchanged on both families (pooled over
five fleets each) while saving 5-10 % of Prophet's CPU (``benchmarks/README.md``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from capacity_assets.forecasting.engines.base import (
    ForecastConfig,
    backtest_cutoff,
    future_dates,
    window_configs,
)
from capacity_assets.schema import RAW_RESULTS, empty

NAME = "prophet"

SETTINGS = {
    "growth": "linear",
    "n_changepoints": 25,
    "changepoint_range": 0.9,
    "changepoint_prior_scale": 0.05,
    "seasonality_prior_scale": 10.0,
    "weekly_order": 3,
    "yearly_order": 10,
    "yearly_min_days": 730,
}
LBFGS_TOL_REL_GRAD = 1e8  # CmdStan's default 1e7; Prophet passes fit(df, tol_rel_grad=...) through
MIN_POINTS = 60  # fewer observations in a fit: the naive fallback
WARM_START = False  # refit from the backtest fit's curve: cheaper, less accurate (see above)
WINDOW_WARM_START = True  # each window's fit starts from the previous origin's (see above)
WORKERS = 2  # concurrent CmdStan processes per batch
PROGRESS_EVERY = (50, 10.0)  # log progress every 50 series or 10 s, whichever comes first

# the compiled model inside the installed prophet package, found without importing prophet (0.8 s)
_SPEC = importlib.util.find_spec("prophet")
if _SPEC is None or not _SPEC.submodule_search_locations:
    raise ModuleNotFoundError(
        "the prophet engine needs the prophet package (pip install prophet)", name="prophet"
    )
STAN_BIN = os.path.join(_SPEC.submodule_search_locations[0], "stan_model", "prophet_model.bin")
_EPOCH_DAY = np.datetime64("1970-01-01", "D")


def prophet_kwargs(yearly: bool = True) -> dict:
    """Stock ``prophet.Prophet`` arguments equivalent to ``SETTINGS`` (used by the parity test)."""
    return dict(
        growth="linear",
        n_changepoints=SETTINGS["n_changepoints"],
        changepoint_range=SETTINGS["changepoint_range"],
        changepoint_prior_scale=SETTINGS["changepoint_prior_scale"],
        seasonality_prior_scale=SETTINGS["seasonality_prior_scale"],
        weekly_seasonality=SETTINGS["weekly_order"],
        yearly_seasonality=SETTINGS["yearly_order"] if yearly else False,
        daily_seasonality=False,
        seasonality_mode="additive",
    )


class FitError(RuntimeError):
    pass


def _fourier(days: np.ndarray, yearly: bool) -> np.ndarray:
    """Prophet's ``fourier_series`` columns (sin, cos per order), weekly then yearly."""
    blocks = [(7.0, SETTINGS["weekly_order"])] + (
        [(365.25, SETTINGS["yearly_order"])] if yearly else []
    )
    cols = []
    for period, order in blocks:
        x = 2 * np.pi * days / period
        for i in range(1, order + 1):
            cols += [np.sin(i * x), np.cos(i * x)]
    return np.column_stack(cols)


def _n_features(yearly: bool) -> int:
    return 2 * (SETTINGS["weekly_order"] + (SETTINGS["yearly_order"] if yearly else 0))


def _json_floats(values) -> str:
    """Shortest JSON that CmdStan parses fast: 9 significant digits (see the module docstring)."""
    return "[" + ", ".join([f"{v:.9g}" for v in values]) + "]"


_ROW_JSON: dict[tuple[bool, float], str] = {}  # (yearly, day) -> JSON of that day's feature row


def _features_json(days: np.ndarray, yearly: bool) -> str:
    """JSON of the feature matrix from per-day rows, so series with gaps (own dates) stay cheap."""
    todo = np.array([d for d in days if (yearly, d) not in _ROW_JSON])
    if len(todo):
        for d, row in zip(todo, _fourier(todo, yearly).tolist()):
            _ROW_JSON[(yearly, d)] = _json_floats(row)
    return "[" + ", ".join([_ROW_JSON[(yearly, d)] for d in days]) + "]"


@dataclass
class Design:
    """Everything of a fit that depends only on the dates (shared by a batch's series)."""

    days: np.ndarray  # days since epoch, float, sorted
    t: np.ndarray  # Prophet's scaled time
    t_change: np.ndarray
    yearly: bool
    json_head: str  # data JSON up to the "y" value
    json_tail: str

    @property
    def S(self) -> int:
        return len(self.t_change)

    @property
    def K(self) -> int:
        return _n_features(self.yearly)

    def features(self, days: np.ndarray) -> np.ndarray:
        return _fourier(days, self.yearly)

    def scaled_time(self, days: np.ndarray) -> np.ndarray:
        return (days - self.days[0]) / (self.days[-1] - self.days[0])


def make_design(days: np.ndarray) -> Design:
    """Prophet's preprocess (scales, changepoint grid, seasonal features, priors) for these dates."""
    T = len(days)
    t = (days - days[0]) / (days[-1] - days[0])
    yearly = days[-1] - days[0] >= SETTINGS["yearly_min_days"]
    hist_size = int(np.floor(T * SETTINGS["changepoint_range"]))
    n_cp = min(SETTINGS["n_changepoints"], hist_size - 1)
    if n_cp > 0:
        t_change = np.sort(t[np.linspace(0, hist_size - 1, n_cp + 1).round().astype(int)[1:]])
    else:
        t_change = np.array([0.0])  # Prophet's dummy changepoint
    K = _n_features(bool(yearly))
    head = (
        '{"T": %d, "K": %d, "S": %d, "tau": %r, "trend_indicator": 0, "t": %s, "t_change": %s, '
        '"X": %s, "sigmas": %s, "s_a": %s, "s_m": %s, "cap": %s, "y": '
    ) % (
        T,
        K,
        len(t_change),
        SETTINGS["changepoint_prior_scale"],
        _json_floats(t.tolist()),
        json.dumps(t_change.tolist()),
        _features_json(days, bool(yearly)),
        json.dumps([SETTINGS["seasonality_prior_scale"]] * K),
        json.dumps([1.0] * K),
        json.dumps([0.0] * K),
        json.dumps([0.0] * T),
    )
    return Design(
        days=days, t=t, t_change=t_change, yearly=bool(yearly), json_head=head, json_tail="}"
    )


class DesignCache:
    """Designs by date vector; a batch usually needs two (backtest and full history)."""

    def __init__(self, size: int = 16):
        self._d: dict[bytes, Design] = {}
        self._size = size
        self._lock = threading.Lock()

    def get(self, days: np.ndarray) -> Design:
        key = days.tobytes()
        with self._lock:
            hit = self._d.get(key)
        if hit is None:
            hit = make_design(days)
            with self._lock:
                if len(self._d) >= self._size:
                    self._d.pop(next(iter(self._d)))
                self._d[key] = hit
        return hit


def _run_stan(data_path: str, init_path: str, out_path: str, algorithm: str, seed: int) -> None:
    cmd = [
        STAN_BIN,
        "random",
        f"seed={seed}",
        "data",
        f"file={data_path}",
        f"init={init_path}",
        "output",
        f"file={out_path}",
        "refresh=0",
        "method=optimize",
        f"algorithm={algorithm}",
        *([f"tol_rel_grad={LBFGS_TOL_REL_GRAD:g}"] if algorithm == "lbfgs" else []),
        "iter=10000",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FitError(f"CmdStan {algorithm} exited {proc.returncode}: {tail[0]}")


def _read_params(out_path: str, S: int, K: int) -> dict:
    with open(out_path) as f:
        lines = [ln for ln in f if ln[0] != "#"]
    if len(lines) < 2:
        raise FitError("CmdStan wrote no estimate")
    n = 3 + S + 1 + K
    names = lines[0].split(",", n)[:n]
    vals = np.array(lines[1].split(",", n)[:n], dtype=float)
    if names[1] != "k" or names[3 + S] != "sigma_obs" or names[n - 1] != f"beta.{K}":
        raise FitError(f"unexpected CmdStan columns {names[:5]}...")
    if not np.all(np.isfinite(vals)):
        raise FitError("non-finite parameters")
    return {
        "k": vals[1],
        "m": vals[2],
        "delta": vals[3 : 3 + S],
        "sigma_obs": vals[3 + S],
        "beta": vals[4 + S :],
    }


def warm_init(prev: dict, prev_design: Design, design: Design, y_scale: float) -> dict:
    """Initial values for a fit on ``design`` that start from ``prev``'s fit (on ``prev_design``).

    Prophet's ``stan_init`` copies the parameters as they are; but they live on the previous fit's
    scales (``t`` over a shorter history, ``y`` divided by another maximum) and its changepoints sit
    elsewhere. Here the previous curve is carried over: the trend through its values at the new
    changepoints (its last slope after the last one), betas (Fourier terms of the absolute day, the
    same columns) rescaled, new yearly terms at 0, sigma_obs rescaled.
    """
    ry = prev["y_scale"] / y_scale
    p0, span_prev = prev_design.days[0], prev_design.days[-1] - prev_design.days[0]
    d0, span = design.days[0], design.days[-1] - design.days[0]
    cp, delta = prev_design.t_change, prev["delta"]

    def trend(day: np.ndarray) -> np.ndarray:  # the previous trend, in this fit's y scale
        t = (day - p0) / span_prev
        on = cp[None, :] <= t[:, None]
        return ((prev["k"] + on @ delta) * t + prev["m"] - on @ (cp * delta)) * ry

    knots = np.concatenate([[0.0], design.t_change])  # this fit's t
    values = trend(d0 + knots * span)
    last = (prev["k"] + delta.sum()) * ry * span / span_prev  # the previous final slope
    gaps = np.diff(knots)
    slopes = np.append(np.diff(values) / np.where(gaps > 0, gaps, 1.0), last)
    slopes[:-1][gaps <= 0] = slopes[1:][gaps <= 0]  # Prophet's dummy changepoint at t = 0
    beta = np.zeros(design.K)
    n = min(design.K, len(prev["beta"]))
    beta[:n] = prev["beta"][:n] * ry
    return {
        "k": float(slopes[0]),
        "m": float(values[0]),
        "delta": np.diff(slopes).tolist(),
        "beta": beta.tolist(),
        "sigma_obs": max(float(prev["sigma_obs"]) * ry, 1e-3),
    }


def fit_map(
    y: np.ndarray, design: Design, workdir: str, tag: str, seed: int = 0, init: dict | None = None
) -> dict:
    """Prophet's MAP fit of ``y`` (on ``design``'s dates) by its Stan model; params plus y_scale.

    ``init``: initial values (``warm_init``); by default Prophet's own (``linear_growth_init``)."""
    y_scale = float(np.abs(y).max()) or 1.0
    ys = y / y_scale
    data_path, init_path, out_path = (
        os.path.join(workdir, f"{tag}.{ext}") for ext in ("data.json", "init.json", "csv")
    )
    with open(data_path, "w") as f:
        f.write(design.json_head)
        f.write(json.dumps(ys.tolist()))
        f.write(design.json_tail)
    if init is None:
        k = (ys[-1] - ys[0]) / (design.t[-1] - design.t[0])  # Prophet's linear_growth_init
        init = {
            "k": k,
            "m": ys[0] - k * design.t[0],
            "delta": [0.0] * design.S,
            "beta": [0.0] * design.K,
            "sigma_obs": 1.0,
        }
    with open(init_path, "w") as f:
        f.write(json.dumps(init))  # one write (json.dump writes every token on its own)
    algorithm = "newton" if len(y) < 100 else "lbfgs"
    try:
        _run_stan(data_path, init_path, out_path, algorithm, seed)
    except FitError:
        if algorithm == "newton":
            raise
        _run_stan(data_path, init_path, out_path, "newton", seed)  # Prophet's own fallback
    params = _read_params(out_path, design.S, design.K)
    params["y_scale"] = y_scale
    return params


def predict_map(
    params: dict, design: Design, days: np.ndarray, interval: float
) -> tuple[np.ndarray, np.ndarray]:
    """(yhat, half-width) on ``days`` from a fit: Prophet's point forecast, analytic bounds."""
    t = design.scaled_time(days)
    cp = design.t_change
    delta = params["delta"]
    on = cp[None, :] <= t[:, None]
    trend = (params["k"] + on @ delta) * t + params["m"] - on @ (cp * delta)
    yhat = (trend + design.features(days) @ params["beta"]) * params["y_scale"]
    # trend random walk beyond the history (Prophet's _sample_uncertainty, in closed form)
    dt = 1.0 / (len(design.days) - 1) if len(design.days) > 1 else 1.0
    h = np.maximum(np.round((t - 1.0) / dt), 0.0)
    p = min(1.0, design.S * dt)
    b = float(np.mean(np.abs(delta))) + 1e-8
    var_trend = 2 * p * b * b * dt * dt * h * (h + 1) * (2 * h + 1) / 6
    z = NormalDist().inv_cdf(0.5 + interval / 2)
    half = z * np.sqrt(params["sigma_obs"] ** 2 + var_trend) * params["y_scale"]
    return yhat, half


def _degenerate(y: np.ndarray) -> str | None:
    if len(y) < MIN_POINTS:
        return f"only {len(y)} observations"
    if not np.all(np.isfinite(y)):
        return "non-finite values"
    if y.max() == y.min():
        return "all zeros" if y.max() == 0 else "constant series"
    return None


def _as_days(ds: pd.Series) -> np.ndarray:
    return (ds.to_numpy().astype("datetime64[D]") - _EPOCH_DAY).astype(np.int64).astype(float)


def _frame(
    key: tuple, days: np.ndarray, yhat: np.ndarray, half: np.ndarray, split: str, origin: float
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "origin": (_EPOCH_DAY + np.int64(origin)).astype("datetime64[ns]"),
            "server_id": key[0],
            "resource": key[1],
            "ds": (_EPOCH_DAY + days.astype(np.int64)).astype("datetime64[ns]"),
            "yhat": yhat,
            "yhat_lower": yhat - half,
            "yhat_upper": yhat + half,
            "split": split,
        }
    )


def forecast_series(
    series: pd.DataFrame, cfg: ForecastConfig, cache: DesignCache, workdir: str, tag: str
) -> pd.DataFrame:
    """Backtest, window and future rows of one series, uncalibrated; raises on any problem of the
    backtest fit or the refit (a window that fails is left out)."""
    series = series.sort_values("ds")
    series = series[series["y"].notna()]
    if series.empty:
        raise FitError("no observations")
    key = (series["server_id"].iloc[0], series["resource"].iloc[0])
    days = _as_days(series["ds"])
    y = series["y"].to_numpy(float)
    last = series["ds"].iloc[-1]
    cut_day = _as_days(pd.Series([backtest_cutoff(last, cfg)]))[0]
    train = days <= cut_day
    for part, yy in (("backtest fit", y[train]), ("refit", y)):
        reason = _degenerate(yy)
        if reason:
            raise FitError(f"{part}: {reason}")
    d_bt, d_full = cache.get(days[train]), cache.get(days)
    p_bt = fit_map(y[train], d_bt, workdir, f"{tag}b", cfg.seed)
    bt_days = days[~train]
    yb, hb = predict_map(p_bt, d_bt, bt_days, cfg.interval)
    frames = [_frame(key, bt_days, yb, hb, "backtest", cut_day)]
    prev, prev_design = p_bt, d_bt
    for n, (_, c) in enumerate(window_configs(cfg)[1:]):
        cut = _as_days(pd.Series([backtest_cutoff(last, c)]))[0]
        part = days <= cut
        if _degenerate(y[part]) or part.all():
            continue  # a window that cannot be fitted is left out; the series keeps the rest
        d_w = cache.get(days[part])
        init = (
            warm_init(prev, prev_design, d_w, float(np.abs(y[part]).max()) or 1.0)
            if WINDOW_WARM_START
            else None
        )
        try:
            p_w = fit_map(y[part], d_w, workdir, f"{tag}w{n}", cfg.seed, init=init)
        except FitError:
            continue
        yw, hw = predict_map(p_w, d_w, days[~part], cfg.interval)
        if np.all(np.isfinite(yw)):
            frames.append(_frame(key, days[~part], yw, hw, "window", cut))
            prev, prev_design = p_w, d_w
    init = (
        warm_init(prev, prev_design, d_full, float(np.abs(y).max()) or 1.0) if WARM_START else None
    )
    p_full = fit_map(y, d_full, workdir, f"{tag}f", cfg.seed, init=init)
    fut_days = _as_days(pd.Series(future_dates(last, cfg)))
    yf, hf = predict_map(p_full, d_full, fut_days, cfg.interval)
    if not (np.all(np.isfinite(yb)) and np.all(np.isfinite(yf))):
        raise FitError("non-finite forecast")
    frames.append(_frame(key, fut_days, yf, hf, "future", days[-1]))
    return pd.concat(frames, ignore_index=True)


def predict(
    history: pd.DataFrame, cfg: ForecastConfig, log=None, workers: int | None = None
) -> tuple[pd.DataFrame, dict]:
    """Raw backtest and future rows of every series it can fit, and why it could not fit the rest."""
    log = log or logging.getLogger(__name__)
    workers = max(1, workers or WORKERS)
    logging.getLogger("cmdstanpy").disabled = True
    logging.getLogger("prophet").setLevel(logging.WARNING)
    groups = list(history.groupby(["server_id", "resource"], sort=True))
    rows, failed = [], {}
    state = {"done": 0, "failed": 0, "last_log": time.monotonic()}
    lock = threading.Lock()
    start = time.monotonic()
    cache = DesignCache()

    with tempfile.TemporaryDirectory(prefix="prophet_") as workdir:
        # ``workers`` series at a time, so as many CmdStan children run while Python prepares the next
        def one(i_group):
            i, (key, g) = i_group
            try:
                result = forecast_series(g, cfg, cache, workdir, f"s{i}")
            except Exception as exc:  # one bad series never fails the batch
                result = str(exc)
            with lock:
                state["done"] += 1
                state["failed"] += isinstance(result, str)
                now = time.monotonic()
                if (
                    state["done"] % PROGRESS_EVERY[0] == 0
                    or now - state["last_log"] >= PROGRESS_EVERY[1]
                ):
                    state["last_log"] = now
                    log.info(
                        f"prophet: {state['done']}/{len(groups)} series, {state['failed']} not fitted, "
                        f"{now - start:.1f} s"
                    )
            return key, result

        with ThreadPoolExecutor(max_workers=workers) as series_pool:
            for key, result in series_pool.map(one, enumerate(groups)):
                if isinstance(result, str):
                    failed[key] = result
                else:
                    rows.append(result)
    return (pd.concat(rows, ignore_index=True) if rows else empty(RAW_RESULTS)), failed
