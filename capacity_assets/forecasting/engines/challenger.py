"""The challenger: one global XGBoost model per batch and resource, on top of a per-series trend.

Why this shape. Trees cannot extrapolate, and capacity planning is mostly about extrapolation, so the
slow part of every series is modelled per series with a few numbers and the trees only learn what is
shared and repeats on the calendar:

* **Regime.** Migrations and disk clean-ups move a series to a new level; history before the last
  such jump says nothing about the level to come. Jumps are found on weekly means (median of the 4
  weeks after minus the 4 weeks before, net of the ordinary drift, larger than 6x the weekly noise
  and 15 % of the level) and everything before the last one is dropped for that series.
* **Baseline** ``T(t)`` per series: robust (Huber IRLS) linear trend plus, when the regime covers a
  year, yearly Fourier terms (ridge-shrunk), fitted on weekly means of the last <= 2 years of the
  regime with a 180-day recency half-life. The yearly terms are fitted jointly with the slope because
  a line fitted across one seasonal cycle gets a spurious slope that would dominate a 6-month
  extrapolation. A hinge (extra slope from 8-30 weeks before the end) is added when it halves the
  robust residual scale: a server starting to saturate is the case capacity planning exists for,
  and a 180-day half-life alone follows a fresh ramp too slowly. Beyond the last day the slope is
  damped (``PHI`` per day): a trend far out is less sure to last.
* **Fill-and-clean-up cycles.** A series that dropped at least twice and is rising again since its
  last drop repeats the cycle: the fill restarts from the post-clean-up level every median cycle
  length (a clean-up too recent to fit refills at the previous cycle's rate). Extrapolating the fill
  through the next clean-up was the challenger's largest error on the demo fleet's disks.
* **Normalised residual** ``z = (y - T) / s`` with ``s`` a robust scale, so busy CPUs, near-idle
  network links and filling disks share one model. The model sees calendar features (day of week,
  day of month, days to month end, month, day-of-year Fourier) and per-series descriptors (its own
  weekly and month-end profile of ``z``, level, noise-to-level ratio), so each series gets its own
  weekly amplitude and month-end peak without a model per series. Pseudo-Huber loss, so spikes
  don't drag the fit; squared-error-like cost (a quantile objective was 3x slower than the budget).
* **Bounds** (central ``interval``): per series, the empirical quantiles of its last year of residuals
  of that model, widened by ``sqrt(1 + h / TAU)`` for the level/trend uncertainty of horizon ``h``.
  Noisier series get wider bounds. In-sample residuals are optimistic, which is exactly what the
  split-conformal rescaling of the future bounds on the backtest (``intervals.calibrate``) corrects.

A series the model cannot handle is returned as not fitted with its reason (the registry gives it the
naive fallback); a failed fit does so for that resource's series, never failing the batch.

The batch is built whole: every series is a slice of one daily grid (``daily.grid``), the calendar
features are computed once for every day the batch needs and looked up by day number, and the
per-series descriptors, feature rows, residual quantiles and bounds are array operations over the
whole batch. Only the baseline (shifts, robust fit, hinge) is fitted series by series, on plain
arrays. The numbers are the ones the per-series version computed (same operations, same order of
rows into the trees), so the forecasts are unchanged.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import xgboost as xgb
from numpy.lib.stride_tricks import sliding_window_view

from capacity_assets.forecasting.engines import daily
from capacity_assets.forecasting.engines.base import (
    ForecastConfig,
    min_history_days,
    window_configs,
)
from capacity_assets.schema import RAW_RESULTS, empty

NAME = "challenger"

WINDOW_DAYS = 730  # training window per series (after the last level shift)
HALF_LIFE_DAYS = 180  # recency weight of the baseline fit
PHI = 0.995  # daily damping of the extrapolated slope
TAU = 60.0  # horizon (days) at which the bounds have widened by sqrt(2)
MIN_REGIME_DAYS = 56  # shorter regimes get a flat level (or the last fill rate), no fit
KNOT_WEEKS = (8, 13, 21, 30)  # candidate recent slope changes, weeks before the last day
KNOT_GAIN = 0.5  # ... taken if they halve the robust residual scale
XGB_PARAMS = {
    "objective": "reg:pseudohubererror",
    "huber_slope": 1.0,
    "tree_method": "hist",
    "max_depth": 6,
    "eta": 0.15,
    "min_child_weight": 20,
    "subsample": 0.8,
    "colsample_bytree": 0.9,
    "max_bin": 64,
    "lambda": 1.0,
    "nthread": 1,  # one batch process per core
}
ROUNDS = 80
RESID_DAYS = 365  # recent in-sample residuals that set each series' bounds


# ---------------------------------------------------------------- per-series baseline


def _calendar(ds: pd.DatetimeIndex) -> np.ndarray:
    """Calendar features shared by every series: dow, dom, days to month end, month, yearly Fourier."""
    doy = 2 * np.pi * ds.dayofyear.to_numpy(float) / 365.25
    dtm = (ds.days_in_month - ds.day).to_numpy(float)
    return np.column_stack(
        [
            ds.dayofweek,
            ds.day,
            dtm,
            ds.month,
            np.sin(doy),
            np.cos(doy),
            np.sin(2 * doy),
            np.cos(2 * doy),
        ]
    ).astype(float)


def _shifts(y: np.ndarray) -> list[tuple[int, float]]:
    """(first day after, signed size) of every level shift, oldest first, from weekly means."""
    n_w = len(y) // 7
    if n_w < 8:
        return []
    off = len(y) - n_w * 7
    w = y[off:].reshape(n_w, 7).mean(axis=1)
    d1 = np.diff(w)
    drift = np.median(d1)
    noise = 1.4826 * np.median(np.abs(d1 - drift)) / np.sqrt(2) + 1e-9
    med = np.median(sliding_window_view(w, 4), axis=1)  # med[i] = median(w[i:i+4])
    tail = [np.median(w[j:]) for j in (n_w - 3, n_w - 2)]  # 3 and 2 weeks after
    j = np.arange(4, n_w - 1)
    before = med[j - 4]
    after = np.concatenate([med[4 : n_w - 3], tail])
    gap = 2.5 + (np.minimum(n_w - j, 4) - 1) / 2  # weeks between window centres
    jump = np.abs(after - before - drift * gap)
    big = jump > np.maximum(
        6 * noise, 0.15 * np.maximum(np.maximum(np.abs(before), np.abs(after)), 5.0)
    )
    signed = after - before - drift * gap
    shifts, hits = [], j[big]
    while len(hits):  # strongest of each cluster, last first
        near = hits[hits >= hits[-1] - 3]
        k = near[np.argmax(np.abs(signed[near - 4]))]
        shifts.append((off + 7 * int(k), float(signed[k - 4])))
        hits = hits[hits < near[0]]
    return shifts[::-1]


def _design(
    t: np.ndarray, doy: np.ndarray, harmonics: int, knot: float | None = None
) -> np.ndarray:
    cols = [np.ones_like(t), t]
    for k in range(1, harmonics + 1):
        cols += [np.sin(2 * np.pi * k * doy / 365.25), np.cos(2 * np.pi * k * doy / 365.25)]
    if knot is not None:
        cols.append(np.maximum(t - knot, 0.0))
    return np.column_stack(cols)


def _median(x: np.ndarray) -> float:
    """``np.median`` of a short 1-d array, the same number without its overhead (the baseline fits
    call it thousands of times per batch on ~100 weekly values)."""
    if np.isnan(x).any():
        return np.nan
    h = len(x) // 2
    if len(x) % 2:
        return np.partition(x, h)[h]
    p = np.partition(x, (h - 1, h))
    return (p[h - 1] + p[h]) / 2


def _irls(X: np.ndarray, w: np.ndarray, rec: np.ndarray, ridge: int) -> tuple[np.ndarray, float]:
    """Huber IRLS with recency weights; ridge on the ``ridge`` Fourier columns. (coef, MAD of resid)."""
    pen = np.zeros(X.shape[1])
    pen[2 : 2 + ridge] = 0.05 * len(w)
    wt = rec.copy()
    for _ in range(4):
        coef = np.linalg.solve(X.T @ (X * wt[:, None]) + np.diag(pen), X.T @ (w * wt))
        r = w - X @ coef
        sc = 1.4826 * _median(np.abs(r)) + 1e-9
        wt = rec * np.minimum(1.0, 1.345 * sc / np.maximum(np.abs(r), 1e-12))
    return coef, sc


class _Calendar:
    """``_calendar`` and the day of year of every day from ``first`` to ``last`` (day numbers),
    computed once per batch and looked up by day."""

    def __init__(self, first: int, last: int):
        ds = pd.date_range(pd.Timestamp(first, unit="D"), periods=last - first + 1, freq="D")
        self.first = first
        self.table = _calendar(ds)
        self.doy = ds.dayofyear.to_numpy(float)

    def features(self, days: np.ndarray) -> np.ndarray:
        return self.table[days - self.first]

    def dayofyear(self, days: np.ndarray) -> np.ndarray:
        return self.doy[days - self.first]


def _weekly(y: np.ndarray, doy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weekly means aligned on the last day: (means, centre in years before the last day, centre doy)."""
    m = len(y)
    n_w = m // 7
    off = m - n_w * 7
    w = y[off:].reshape(n_w, 7).mean(axis=1)
    t = (np.arange(n_w) * 7 + off + 3 - (m - 1)) / 365.25
    return w, t, doy[off + 3 :: 7][:n_w]


class _Baseline:
    """Damped robust trend + yearly terms of one series' training window, with its scale.
    ``days`` are the series' day numbers, ``doy`` their days of the year."""

    def __init__(self, y: np.ndarray, days: np.ndarray, doy: np.ndarray):
        shifts = _shifts(y)
        start = max(shifts[-1][0] if shifts else 0, len(y) - WINDOW_DAYS)
        self.start = start
        # disks that fill and get cleaned up: >= 2 drops, now rising -> the cycle repeats
        drops = [i for i, size in shifts if size < 0]
        self.cycle = float(np.median(np.diff(drops))) if len(drops) >= 2 else 0.0
        self.since = len(y) - 1 - drops[-1] if drops else 0
        self.knot = None
        prev = (y[drops[-2] : drops[-1]], doy[drops[-2] : drops[-1]]) if len(drops) >= 2 else None
        y, days, doy = y[start:], days[start:], doy[start:]
        m = len(y)
        self.last = int(days[-1])
        self.harmonics = 2 if m >= 540 else 1 if m >= 365 else 0
        if m < MIN_REGIME_DAYS:
            self.harmonics = 0
            slope = 0.0
            if prev is not None and self.cycle and len(prev[0]) >= MIN_REGIME_DAYS:
                # just cleaned up: the disk fills again at the previous cycle's rate
                w, t, _ = _weekly(*prev)
                slope = float(_irls(_design(t, t, 0), w, np.ones_like(w), 0)[0][1])
            t = (np.arange(m) - (m - 1)) / 365.25
            self.coef = np.array([np.median(y[-28:] - slope * t[-28:]), slope])
        else:
            w, t, wdoy = _weekly(y, doy)
            rec = 0.5 ** (-t * 365.25 / HALF_LIFE_DAYS)
            coef, sc = _irls(_design(t, wdoy, self.harmonics), w, rec, 2 * self.harmonics)
            # a recent change of slope (a server starting to saturate) beats the long-run line
            best = (KNOT_GAIN * sc, coef, None)
            for weeks in KNOT_WEEKS:
                knot = -7 * weeks / 365.25
                if knot - t[0] < 8 * 7 / 365.25:
                    continue
                c, sc_k = _irls(_design(t, wdoy, self.harmonics, knot), w, rec, 2 * self.harmonics)
                if sc_k < best[0]:
                    best = (sc_k, c, knot)
            self.coef, self.knot = best[1], best[2]
        if not (self.cycle and shifts[-1][1] < 0 and self.coef[1] > 0 and self.harmonics == 0):
            self.cycle = 0.0
        fit = self.at(days, doy)
        resid = y - fit
        level = max(abs(float(np.median(y[-28:]))), 0.0)
        self.scale = max(
            1.4826 * float(np.median(np.abs(resid - np.median(resid)))),
            float(np.std(resid)) * 0.25,
            0.02 * level,
            0.05,
        )
        self.level = level

    def at(self, days: np.ndarray, doy: np.ndarray) -> np.ndarray:
        """Baseline on ``days``; beyond the last day the slope is damped, or a fill cycle repeats."""
        h = (days - self.last).astype(float)
        ahead = np.clip(h, 0, None)
        t = np.where(h > 0, PHI * (1 - PHI**ahead) / (1 - PHI), h)
        if self.cycle:
            first = max(self.cycle - self.since, 7.0)  # days to the next clean-up
            wrap = h >= first
            t[wrap] = -self.since + (h[wrap] - first) % self.cycle
        return _design(t / 365.25, doy, self.harmonics, self.knot) @ self.coef


# ---------------------------------------------------------------- global model, whole batch


def _group_starts(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) - counts


def _descriptors(
    s: np.ndarray, dow: np.ndarray, dtm: np.ndarray, z: np.ndarray, level, scale
) -> np.ndarray:
    """Per-series descriptors (one row per series ``s``): its own weekly profile of z (medians by
    day of week), month-end profile (means by days to month end, 0-3+, relative to 3+), level and
    noise-to-level ratio. A profile cell without a day is 0."""
    k = len(level)
    # medians: sort by (series, weekday, z); the middle one, or the mean of the middle two
    g = s * 7 + dow
    zs = z[np.lexsort((z, g))]
    n = np.bincount(g, minlength=7 * k)
    lo = _group_starts(n) + np.maximum(n - 1, 0) // 2
    hi = _group_starts(n) + n // 2
    lo, hi = np.minimum(lo, len(z) - 1), np.minimum(hi, len(z) - 1)
    dow_prof = np.where(n == 0, 0.0, np.where(n % 2 == 1, zs[lo], (zs[lo] + zs[hi]) / 2))
    # means: a cell's rows in their time order, each cell's np.mean (which sums pairwise: a
    # one-pass sum would differ in the last bit and could move a tree's split)
    g = s * 4 + dtm
    zs = z[np.argsort(g, kind="stable")]
    ends = np.cumsum(np.bincount(g, minlength=4 * k))
    me_prof = np.array(
        [zs[a:b].mean() if b > a else 0.0 for a, b in zip(np.r_[0, ends[:-1]], ends)]
    )
    me_prof = me_prof.reshape(k, 4)
    return np.column_stack(
        [
            dow_prof.reshape(k, 7),
            me_prof - me_prof[:, 3:4],
            level,
            scale / np.maximum(level, 1.0),
        ]
    )


def _rows(cal: np.ndarray, s: np.ndarray, desc: np.ndarray) -> np.ndarray:
    """Feature rows: the day's calendar, its series' profile values for that day, its descriptors."""
    dow = cal[:, 0].astype(int)
    dtm = np.minimum(cal[:, 2], 3).astype(int)
    return np.column_stack([cal, desc[s, dow], desc[s, 7 + dtm], desc[s, 11:]])


def _quantiles(values: np.ndarray, s: np.ndarray, k: int, q: float) -> np.ndarray:
    """``np.quantile(values[s == i], q)`` (linear) for every series ``i`` < ``k`` at once."""
    v = values[np.lexsort((values, s))]
    n = np.bincount(s, minlength=k)
    idx = (np.maximum(n, 1) - 1) * q  # numpy's "linear" method: (n - 1) q, then its lerp
    below = np.floor(idx)
    t = idx - below
    base = _group_starts(n)
    a = v[np.clip(base + np.clip(below, 0, n - 1).astype(int), 0, len(v) - 1)]
    b = v[np.clip(base + np.clip(below + 1, 0, n - 1).astype(int), 0, len(v) - 1)]
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def _fit_predict(
    grid: daily.Grid,
    good: np.ndarray,
    n_fit: np.ndarray,
    target_first: np.ndarray,
    target_len: np.ndarray,
    cal: _Calendar,
    cfg: ForecastConfig,
) -> tuple[dict, dict]:
    """One global model per resource, fitted on the first ``n_fit`` days of every ``good`` series;
    each series predicted on ``target_len`` days from ``target_first``. Returns
    ({series: reason}, arrays of the predicted rows with their grid series index)."""
    failed: dict[int, str] = {}
    fitted_series, bases, windows, zs = [], [], [], []
    for i, n in zip(good, n_fit):
        try:
            y = grid.values(i)[:n]
            days = grid.first[i] + np.arange(n)
            base = _Baseline(y, days, cal.dayofyear(days))
            w = days[base.start :]
            zs.append((y[base.start :] - base.at(w, cal.dayofyear(w))) / base.scale)
        except Exception as exc:  # noqa: BLE001 - one bad series must not fail the batch
            failed[int(i)] = f"baseline failed: {exc!r}"
            continue
        fitted_series.append(int(i))
        bases.append(base)
        windows.append(w)
    k = len(bases)
    if not k:
        return failed, {}
    fitted_series = np.array(fitted_series)
    resource = np.array([grid.keys[i][1] for i in fitted_series], dtype=object)
    level = np.array([b.level for b in bases])
    scale = np.array([b.scale for b in bases])
    last = np.array([b.last for b in bases])

    lengths = np.array([len(w) for w in windows])
    s = np.repeat(np.arange(k), lengths)
    z = np.concatenate(zs)
    cal_w = cal.features(np.concatenate(windows))
    desc = _descriptors(
        s, cal_w[:, 0].astype(int), np.minimum(cal_w[:, 2], 3).astype(int), z, level, scale
    )
    X = _rows(cal_w, s, desc)
    at = np.searchsorted(good, fitted_series)
    t_first, t_len = target_first[at], target_len[at]
    st = np.repeat(np.arange(k), t_len)
    t_days = np.repeat(t_first, t_len) + (
        np.arange(t_len.sum()) - np.repeat(_group_starts(t_len), t_len)
    )
    Xt = _rows(cal.features(t_days), st, desc)

    # the booster predicts float32: P stays float32, so scale * P is the float32 product it was
    fitted, P = np.full(len(z), np.nan), np.full(len(t_days), np.nan, dtype=np.float32)
    params = {**XGB_PARAMS, "seed": cfg.seed}
    ok = np.ones(k, bool)
    for r in dict.fromkeys(resource):  # in the order of the batch, one model each
        mine = resource == r
        rows, t_rows = mine[s], mine[st]
        try:
            booster = xgb.train(params, xgb.DMatrix(X[rows], label=z[rows], nthread=1), ROUNDS)
            fitted[rows] = booster.predict(xgb.DMatrix(X[rows], nthread=1))
            P[t_rows] = booster.predict(xgb.DMatrix(Xt[t_rows], nthread=1))
        except Exception as exc:  # noqa: BLE001
            for i in fitted_series[mine]:
                failed[int(i)] = f"{r} model failed: {exc!r}"
            ok &= ~mine

    # bounds: quantiles of each series' last RESID_DAYS in-sample residuals, widened with h
    recent = np.arange(len(z)) - np.repeat(_group_starts(lengths), lengths) >= np.repeat(
        lengths - RESID_DAYS, lengths
    )
    a = (1 - cfg.interval) / 2
    resid, s_recent = (z - fitted)[recent], s[recent]
    lo = _quantiles(resid, s_recent, k, a)
    hi = _quantiles(resid, s_recent, k, 1 - a)
    trend = np.concatenate(
        [b.at(d, cal.dayofyear(d)) for b, d in zip(bases, np.split(t_days, np.cumsum(t_len)[:-1]))]
    )
    grow = np.sqrt(1 + np.maximum((t_days - last[st]).astype(float), 1.0) / TAU)
    yhat = trend + scale[st].astype(np.float32) * P
    keep = ok[st]
    return failed, {
        "series": fitted_series[st][keep],
        "day": t_days[keep],
        "h": (t_days - np.repeat(t_first, t_len) + 1)[keep],  # days after the fit's last day
        "yhat": yhat[keep],
        "yhat_lower": (yhat + scale[st] * np.minimum(lo, 0.0)[st] * grow)[keep],
        "yhat_upper": (yhat + scale[st] * np.maximum(hi, 0.0)[st] * grow)[keep],
    }


# ---------------------------------------------------------------- engine


def _unusable(grid: daily.Grid, cfg: ForecastConfig) -> dict[int, str]:
    """Why each series the model cannot use is unusable, checked on its raw rows."""
    reasons = {}
    short = min_history_days(cfg)
    for i in range(len(grid.keys)):
        rows, missing = int(grid.rows[i]), int(grid.missing[i])
        if rows < short:
            reasons[i] = f"too short ({rows} days < {short})"
        elif grid.duplicated[i]:
            reasons[i] = "duplicate days"
        elif missing / rows > 0.1 or grid.missing_last_week[i]:
            reasons[i] = f"{missing} missing values"
        elif grid.valid_max[i] - grid.valid_min[i] < 1e-9:
            peak = max(abs(grid.valid_max[i]), abs(grid.valid_min[i]))
            reasons[i] = "constant" if peak > 0 else "all zeros"
    return reasons


def predict(history: pd.DataFrame, cfg: ForecastConfig, log=None) -> tuple[pd.DataFrame, dict]:
    """Raw backtest and future rows of every usable series, and why the others are not usable."""
    log = log or logging.getLogger(__name__)
    cpu0 = time.process_time()
    grid = daily.grid(history)
    reasons = _unusable(grid, cfg)
    good = np.array([i for i in range(len(grid.keys)) if i not in reasons], dtype=np.int64)
    parts = []
    if len(good):
        cal = _Calendar(int(grid.first[good].min()), int(grid.last[good].max()) + cfg.horizon_days)
        n_all = grid.length[good]
        splits = []  # (split, days fitted, first target day, target days), earliest origin first
        for split, c in window_configs(cfg):
            n_train = grid.train_days(c)[good]
            splits.append((split, n_train, grid.first[good] + n_train, n_all - n_train))
        splits.append(("future", n_all, grid.last[good] + 1, np.full(len(good), cfg.horizon_days)))
        results = [
            (split, _fit_predict(grid, good, n_fit, t_first, t_len, cal, cfg))
            for split, n_fit, t_first, t_len in splits
        ]
        for i in good:  # the backtest's reason first, as a series fails at its first fit
            reason = next((r[0][i] for s, r in results if s != "window" and i in r[0]), None)
            if reason:
                reasons[int(i)] = reason
        for split, (bad, rows) in results:
            if rows:  # a window's failure leaves out that window only
                out = list(reasons) + (list(bad) if split == "window" else [])
                keep = ~np.isin(rows["series"], out)
                parts.append({**{c: v[keep] for c, v in rows.items()}, "split": split})
    failed = {grid.keys[i]: reason for i, reason in sorted(reasons.items())}
    log.info(
        "challenger: %d series, %d usable, %.0f ms CPU/series",
        len(grid.keys),
        len(good),
        1000 * (time.process_time() - cpu0) / max(len(grid.keys), 1),
    )
    if not parts or not sum(len(p["series"]) for p in parts):
        return empty(RAW_RESULTS), failed
    keys = np.array(grid.keys, dtype=object).reshape(-1, 2)
    series = np.concatenate([p["series"] for p in parts])
    return pd.DataFrame(
        {
            "server_id": keys[series, 0],
            "resource": keys[series, 1],
            "ds": daily.timestamps(np.concatenate([p["day"] for p in parts])),
            **{
                c: np.concatenate([p[c] for p in parts])
                for c in ("yhat", "yhat_lower", "yhat_upper")
            },
            "split": np.concatenate([np.full(len(p["series"]), p["split"]) for p in parts]),
            "origin": daily.timestamps(np.concatenate([p["day"] - p["h"] for p in parts])),
        }
    ), failed
