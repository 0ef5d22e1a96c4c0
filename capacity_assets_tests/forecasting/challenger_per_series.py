"""The challenger as it was before issue 25, one frame per series: the reference the batch version
(``capacity_assets.forecasting.engines.challenger``) must match to 1e-6 (``test_challenger.py``).

Frozen on purpose: it is the per-series code of commit cf31daa, unchanged apart from this docstring
(the model itself is documented in the engine's module). Delete it with the comparison once the
batch version has a history of its own.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import xgboost as xgb
from numpy.lib.stride_tricks import sliding_window_view

from capacity_assets.forecasting.engines.base import (
    ForecastConfig,
    backtest_cutoff,
    future_dates,
    min_history_days,
)
from capacity_assets.schema import RAW_RESULTS, SERIES_KEY, empty

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


def _irls(X: np.ndarray, w: np.ndarray, rec: np.ndarray, ridge: int) -> tuple[np.ndarray, float]:
    """Huber IRLS with recency weights; ridge on the ``ridge`` Fourier columns. (coef, MAD of resid)."""
    pen = np.zeros(X.shape[1])
    pen[2 : 2 + ridge] = 0.05 * len(w)
    wt = rec.copy()
    for _ in range(4):
        coef = np.linalg.solve(X.T @ (X * wt[:, None]) + np.diag(pen), X.T @ (w * wt))
        r = w - X @ coef
        sc = 1.4826 * np.median(np.abs(r)) + 1e-9
        wt = rec * np.minimum(1.0, 1.345 * sc / np.maximum(np.abs(r), 1e-12))
    return coef, sc


def _weekly(y: np.ndarray, ds: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weekly means aligned on the last day: (means, centre in years before the last day, centre doy)."""
    m = len(y)
    n_w = m // 7
    off = m - n_w * 7
    w = y[off:].reshape(n_w, 7).mean(axis=1)
    t = (np.arange(n_w) * 7 + off + 3 - (m - 1)) / 365.25
    return w, t, ds[off + 3 :: 7][:n_w].dayofyear.to_numpy(float)


class _Baseline:
    """Damped robust trend + yearly terms of one series' training window, with its scale."""

    def __init__(self, y: np.ndarray, ds: pd.DatetimeIndex):
        shifts = _shifts(y)
        start = max(shifts[-1][0] if shifts else 0, len(y) - WINDOW_DAYS)
        self.start = start
        # disks that fill and get cleaned up: >= 2 drops, now rising -> the cycle repeats
        drops = [i for i, size in shifts if size < 0]
        self.cycle = float(np.median(np.diff(drops))) if len(drops) >= 2 else 0.0
        self.since = len(y) - 1 - drops[-1] if drops else 0
        self.knot = None
        prev = (y[drops[-2] : drops[-1]], ds[drops[-2] : drops[-1]]) if len(drops) >= 2 else None
        y, ds = y[start:], ds[start:]
        m = len(y)
        self.last = ds[-1]
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
            w, t, doy = _weekly(y, ds)
            rec = 0.5 ** (-t * 365.25 / HALF_LIFE_DAYS)
            coef, sc = _irls(_design(t, doy, self.harmonics), w, rec, 2 * self.harmonics)
            # a recent change of slope (a server starting to saturate) beats the long-run line
            best = (KNOT_GAIN * sc, coef, None)
            for weeks in KNOT_WEEKS:
                knot = -7 * weeks / 365.25
                if knot - t[0] < 8 * 7 / 365.25:
                    continue
                c, sc_k = _irls(_design(t, doy, self.harmonics, knot), w, rec, 2 * self.harmonics)
                if sc_k < best[0]:
                    best = (sc_k, c, knot)
            self.coef, self.knot = best[1], best[2]
        if not (self.cycle and shifts[-1][1] < 0 and self.coef[1] > 0 and self.harmonics == 0):
            self.cycle = 0.0
        fit = self.at(ds)
        resid = y - fit
        level = max(abs(float(np.median(y[-28:]))), 0.0)
        self.scale = max(
            1.4826 * float(np.median(np.abs(resid - np.median(resid)))),
            float(np.std(resid)) * 0.25,
            0.02 * level,
            0.05,
        )
        self.level = level

    def at(self, ds: pd.DatetimeIndex) -> np.ndarray:
        """Baseline on ``ds``; beyond the last day the slope is damped, or a fill cycle repeats."""
        h = (ds - self.last).days.to_numpy(float)
        ahead = np.clip(h, 0, None)
        t = np.where(h > 0, PHI * (1 - PHI**ahead) / (1 - PHI), h)
        if self.cycle:
            first = max(self.cycle - self.since, 7.0)  # days to the next clean-up
            wrap = h >= first
            t[wrap] = -self.since + (h[wrap] - first) % self.cycle
        return (
            _design(t / 365.25, ds.dayofyear.to_numpy(float), self.harmonics, self.knot) @ self.coef
        )


# ---------------------------------------------------------------- global model


def _series_features(z: np.ndarray, cal: np.ndarray, base: _Baseline) -> np.ndarray:
    """Per-series descriptors: its own weekly / month-end profile of z, level, noise ratio."""
    dow = cal[:, 0].astype(int)
    dtm = np.minimum(cal[:, 2], 3).astype(int)
    dow_prof = np.array([np.median(z[dow == d]) if np.any(dow == d) else 0.0 for d in range(7)])
    me_prof = np.array([np.mean(z[dtm == d]) if np.any(dtm == d) else 0.0 for d in range(4)])
    me_prof = me_prof - me_prof[3]
    return np.array([*dow_prof, *me_prof, base.level, base.scale / max(base.level, 1.0)])


def _rows(cal: np.ndarray, desc: np.ndarray) -> np.ndarray:
    dow = cal[:, 0].astype(int)
    dtm = np.minimum(cal[:, 2], 3).astype(int)
    return np.column_stack([cal, desc[dow], desc[7 + dtm], np.tile(desc[11:], (len(cal), 1))])


def _fit_predict(series: list[dict], end_of: str, targets: str, cfg: ForecastConfig, log) -> dict:
    """Fit one global model per resource on every series' training part; predict its targets."""
    out: dict = {}
    by_resource: dict[str, list] = {}
    for s in series:
        try:
            n = s[end_of]
            y, ds = s["y"][:n], s["ds"][:n]
            base = _Baseline(y, ds)
            y_w, ds_w = y[base.start :], ds[base.start :]
            z = (y_w - base.at(ds_w)) / base.scale
            cal = _calendar(ds_w)
            desc = _series_features(z, cal, base)
            tds = s[targets]
            by_resource.setdefault(s["key"][1], []).append(
                (s, base, _rows(cal, desc), z, tds, _rows(_calendar(tds), desc))
            )
        except Exception as exc:  # noqa: BLE001 - one bad series must not fail the batch
            out[s["key"]] = f"baseline failed: {exc!r}"
    a = (1 - cfg.interval) / 2
    params = {**XGB_PARAMS, "seed": cfg.seed}
    for resource, items in by_resource.items():
        X = np.vstack([it[2] for it in items])
        z = np.concatenate([it[3] for it in items])
        try:
            booster = xgb.train(params, xgb.DMatrix(X, label=z, nthread=1), ROUNDS)
            fitted = booster.predict(xgb.DMatrix(X, nthread=1))
            P = booster.predict(xgb.DMatrix(np.vstack([it[5] for it in items]), nthread=1))
        except Exception as exc:  # noqa: BLE001
            for it in items:
                out[it[0]["key"]] = f"{resource} model failed: {exc!r}"
            continue
        i = j = 0
        for s, base, _xs, zs, tds, xt in items:
            resid = (zs - fitted[j : j + len(zs)])[-RESID_DAYS:]
            q = P[i : i + len(xt)]
            i, j = i + len(xt), j + len(zs)
            lo, hi = np.quantile(resid, [a, 1 - a])
            trend = base.at(tds)
            h = np.maximum((tds - base.last).days.to_numpy(float), 1.0)
            grow = np.sqrt(1 + h / TAU)
            yhat = trend + base.scale * q
            out[s["key"]] = pd.DataFrame(
                {
                    "ds": tds,
                    "yhat": yhat,
                    "yhat_lower": yhat + base.scale * min(lo, 0.0) * grow,
                    "yhat_upper": yhat + base.scale * max(hi, 0.0) * grow,
                }
            )
    return out


# ---------------------------------------------------------------- engine


def _unusable(g: pd.DataFrame, cfg: ForecastConfig) -> str | None:
    y = g["y"].to_numpy(float)
    if len(y) < min_history_days(cfg):
        return f"too short ({len(y)} days < {min_history_days(cfg)})"
    if g["ds"].duplicated().any():
        return "duplicate days"
    nan = ~np.isfinite(y)
    if nan.mean() > 0.1 or nan[-7:].any():
        return f"{int(nan.sum())} missing values"
    if np.nanmax(y) - np.nanmin(y) < 1e-9:
        return "constant" if np.nanmax(np.abs(y)) > 0 else "all zeros"
    return None


def predict(history: pd.DataFrame, cfg: ForecastConfig, log=None) -> tuple[pd.DataFrame, dict]:
    """Raw backtest and future rows of every usable series, and why the others are not usable."""
    log = log or logging.getLogger(__name__)
    cpu0 = time.process_time()
    good, rows, failed = [], [], {}
    groups = {key: g.sort_values("ds") for key, g in history.groupby(SERIES_KEY, sort=True)}
    for key, g in groups.items():
        reason = _unusable(g, cfg)
        if reason is None:
            ds = pd.DatetimeIndex(g["ds"])
            full = pd.date_range(ds[0], ds[-1], freq="D")
            y = (
                pd.Series(g["y"].to_numpy(float), index=ds)
                .reindex(full)
                .interpolate(limit_direction="both")
            )
            cut = backtest_cutoff(full[-1], cfg)
            n_train = int((full <= cut).sum())
            good.append(
                {
                    "key": key,
                    "ds": full,
                    "y": y.to_numpy(),
                    "train": n_train,
                    "all": len(full),
                    "backtest": full[n_train:],
                    "future": future_dates(full[-1], cfg),
                }
            )
        else:
            failed[key] = reason
    bt = _fit_predict(good, "train", "backtest", cfg, log) if good else {}
    fu = _fit_predict(good, "all", "future", cfg, log) if good else {}
    for s in good:
        key = s["key"]
        b, f = bt.get(key), fu.get(key)
        if not isinstance(b, pd.DataFrame) or not isinstance(f, pd.DataFrame):
            failed[key] = b if isinstance(b, str) else f if isinstance(f, str) else "no prediction"
            continue
        rows.append(b.assign(server_id=key[0], resource=key[1], split="backtest"))
        rows.append(f.assign(server_id=key[0], resource=key[1], split="future"))
    log.info(
        "challenger: %d series, %d usable, %.0f ms CPU/series",
        len(groups),
        len(good),
        1000 * (time.process_time() - cpu0) / max(len(groups), 1),
    )
    return (pd.concat(rows, ignore_index=True) if rows else empty(RAW_RESULTS)), failed
