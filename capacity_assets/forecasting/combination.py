"""The combination contender: per series, a weighted mean of the fitted contenders' forecasts.

Why: one 4-month backtest is a noisy judge. On a fleet unlike the one the engines were tuned on, the
plain mean of the engines' forecasts beat every engine and the tournament's pick, because the
engines' errors are far from perfectly correlated and averaging cancels part of them (the oldest
result in forecast combination). It costs no fit: it reuses the contenders' rows.

Weights, per series: each fitted contender's MAPE over the days of every origin pooled (the
backtest's and the windows', ``windows``) to the power ``-WEIGHT_POWER`` (4), normalised. The plain
mean of all three was hostage to the weakest (on a fleet where ETS was far off it lost to the mean
of the two others), and keeping only the best two threw away what the third knew where it was
nearly as good. The power was chosen on the demo family only (issue 26, ``benchmarks/README.md``):
2 weighs too evenly, 8 is nearly a pick. A contender without a scored day gets the weight of the
worst scored one; a series with none scored, equal weights. The weights are learnt on the same
windows the tournament then scores the combination on, so its pooled error flatters it a little.

Rule, per series, split, origin and day, over the members (``:fallback`` rows only when no
contender has a real fit, since they are the naive baseline):

* ``yhat`` is the weighted mean of the members' unclipped forecasts (``demand``).
* The bounds are the ``interval`` quantiles of the mixture, with the same weights, of the members'
  predictive distributions (the *linear pool*), each member a two-piece normal with median ``yhat`` whose
  quantiles are its own bounds. Where members disagree, the pool widens to cover both; where they
  agree, it is about as wide as they are. Never narrower than the weighted mean of the bounds (the
  rule a test checks): averaging quantiles is over-confident exactly when the members disagree.
* Calibrated like every contender, consistently: the members' future bounds are already
  calibrated, so their backtest bounds are first scaled by the same factors (``intervals``), the
  pool of those is the combination's backtest band, and the combination's future band is then
  scaled by the factor its own backtest asks for (below 1 where the pool over-covers, which it
  does where members disagree but their errors cancel). Without ``actuals`` no scaling is done.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from capacity_assets.forecasting import windows
from capacity_assets.forecasting.engines import intervals
from capacity_assets.forecasting.engines.base import ForecastConfig, with_origin
from capacity_assets.forecasting.engines.registry import CONTENDERS, finish
from capacity_assets.schema import ENGINE_RESULTS, SERIES_KEY, empty

NAME = "combination"
ROW = SERIES_KEY + ["split", "origin", "ds"]
WEIGHT_POWER = 4.0  # weight = pooled MAPE ** -WEIGHT_POWER (None or 0: equal weights)
_ERROR_FLOOR = 0.1  # percent: a perfect backtest does not get an infinite weight
_TOL = 1e-9  # points: a quantile is final when Newton's step is below this
_MAX_STEPS = 100  # safeguard; bisection alone would need about 40 steps for _TOL


def _members(
    results_by_model: dict[str, pd.DataFrame], actuals: pd.DataFrame | None, interval: float
) -> pd.DataFrame:
    """Long frame of the members' rows (fallbacks dropped where a series has a real fit), their
    backtest bounds scaled as their future bounds were (see the module docstring)."""
    parts = []
    for name, res in results_by_model.items():
        if name not in CONTENDERS or res is None or res.empty:
            continue
        r = with_origin(res)
        r = r[ROW + ["yhat", "yhat_lower", "yhat_upper", "model", "demand", "demand_upper"]]
        if actuals is not None:
            bt = r["split"] == "backtest"
            scaled = intervals.calibrate(r[bt], r[bt], actuals, interval)
            scaled = scaled.assign(
                demand_upper=scaled["demand"] + (scaled["yhat_upper"] - scaled["yhat"])
            )
            r = pd.concat([scaled, r[~bt]], ignore_index=True)
        # by the column's few distinct names: a string method per row cost a second a batch
        model = r["model"]
        fallbacks = [m for m in model.unique() if str(m).endswith(":fallback")]
        parts.append(r.assign(member=name, fallback=model.isin(fallbacks).to_numpy()))
    if not parts:
        return pd.DataFrame()
    long = pd.concat(parts, ignore_index=True)
    real = long.loc[~long["fallback"], SERIES_KEY].drop_duplicates().assign(_real=True)
    long = long.merge(real, on=SERIES_KEY, how="left")
    return long[~(long["fallback"] & long["_real"].eq(True))].drop(columns="_real")


def _weights(long: pd.DataFrame, actuals: pd.DataFrame | None, names: list[str]) -> pd.DataFrame:
    """Per series (index) and member (columns, ``names``): its weight, summing to 1 over the
    members the series has (0 for the others); see the module docstring."""
    series = pd.MultiIndex.from_frame(long[SERIES_KEY].drop_duplicates())
    present = pd.DataFrame(False, index=series, columns=names)
    for member, rows in long[SERIES_KEY + ["member"]].drop_duplicates().groupby("member"):
        present[member] = series.isin(pd.MultiIndex.from_frame(rows[SERIES_KEY]))
    weight = present.astype(float)
    if actuals is not None and WEIGHT_POWER:
        by_member = {
            m: g.rename(columns={"c": "demand_"}).assign(yhat=g["c"].clip(0.0, 100.0))
            for m, g in long[long["split"].isin(windows.OUT_OF_SAMPLE)].groupby("member")
        }
        error, _ = windows.pooled(by_member, actuals, SERIES_KEY)
        error = error.reindex(index=series, columns=names).where(present)
        worst = error.max(axis=1)
        error = error.apply(lambda col: col.fillna(worst)).where(present)  # unscored: the worst
        w = np.maximum(error.to_numpy(float), _ERROR_FLOOR) ** -float(WEIGHT_POWER)
        scored = np.isfinite(w).any(axis=1, keepdims=True)  # else equal weights
        w = np.where(scored, np.nan_to_num(w, nan=0.0), weight.to_numpy(float))
        weight = pd.DataFrame(w, index=series, columns=names)
    return weight.div(weight.sum(axis=1).replace(0.0, 1.0), axis=0)


def pool_bounds(
    centre: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    interval: float,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Central ``interval`` of the mixture of two-piece normals, one per column, weighted by
    ``weights`` (same shape; equal weights when None).

    Arrays are (rows, members); NaN (or a zero weight) marks a missing member. Member j has median ``centre`` and its
    ``(1 - interval) / 2`` and ``(1 + interval) / 2`` quantiles at ``lower`` and ``upper``. The
    mixture's quantile lies between the members' (every CDF is below the level at the smallest
    member quantile and above it at the largest), so Newton's method kept inside that bracket
    converges; to ``_TOL``, the 40 bisection steps it replaced gave the same bounds within 1e-9.
    """
    z = float(ndtri(0.5 + interval / 2))
    s_lo = np.maximum(centre - lower, 1e-9) / z
    s_hi = np.maximum(upper - centre, 1e-9) / z
    have = np.isfinite(centre)
    w = np.where(have, 1.0 if weights is None else np.nan_to_num(weights, nan=0.0), 0.0)
    have &= w > 0
    n = w.sum(axis=1)
    n = np.where(n > 0, n, 1.0)

    def cdf_pdf(x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = x[:, None] - centre[rows]
        s = np.where(d < 0, s_lo[rows], s_hi[rows])
        u = d / s
        h, wr = have[rows], w[rows]
        f = np.where(h, wr * ndtr(u), 0.0).sum(axis=1) / n[rows]
        p = np.where(h, wr * np.exp(-0.5 * u * u) / s, 0.0).sum(axis=1) / (
            n[rows] * np.sqrt(2 * np.pi)
        )
        return f, p

    out = []
    for q, member_q in (((1 - interval) / 2, lower), ((1 + interval) / 2, upper)):
        # Newton's method kept inside a shrinking bracket, bisecting where a step would leave it or
        # shrinks less than half the step before (Numerical Recipes' rtsafe: Newton alone can cycle
        # across a member's kink): a few steps reach what 40 bisections did
        mq = np.where(have, member_q, np.nan)
        lo, hi = np.nanmin(mq, axis=1), np.nanmax(mq, axis=1)
        x = np.clip(_wmean(mq, w), lo, hi)
        rows = np.flatnonzero(hi > lo)
        last_step = hi - lo
        for _ in range(_MAX_STEPS):
            if not len(rows):
                break
            xr, lr, hr = x[rows], lo[rows], hi[rows]
            f, p = cdf_pdf(xr, rows)
            below = f < q
            lr, hr = np.where(below, xr, lr), np.where(below, hr, xr)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                step = (f - q) / p
            new = xr - step
            newton = (
                np.isfinite(new)
                & (new >= lr)
                & (new <= hr)
                & (np.abs(step) <= 0.5 * last_step[rows])
            )
            new = np.where(newton, new, (lr + hr) / 2)
            last_step[rows] = np.abs(new - xr)
            done = (last_step[rows] < _TOL) | (hr - lr < _TOL)
            x[rows], lo[rows], hi[rows] = new, lr, hr
            rows = rows[~done]
        out.append(x)
    return out[0], out[1]


def _wmean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise weighted mean over the finite values."""
    w = np.where(np.isfinite(values), weights, 0.0)
    return np.nansum(values * w, axis=1) / np.where(w.sum(axis=1) > 0, w.sum(axis=1), np.nan)


def combine(
    results_by_model: dict[str, pd.DataFrame], actuals: pd.DataFrame | None, cfg: ForecastConfig
) -> pd.DataFrame:
    """ENGINE_RESULTS rows of the combination (model ``combination``, or ``combination:fallback``
    when every member of a series is a fallback) from the fitted contenders' results.

    ``results_by_model``: ``{name: <name>_results}`` as the engines' assets store them (a ``batch``
    column is ignored; names that are not fitted contenders, such as the combination itself, are
    skipped). ``actuals`` (server_id, resource, ds, y; a ``filled`` flag or ``batch`` column are
    ignored) calibrates the bounds and weighs the members, as the registry does for the engines.
    Backtest, window and future rows cover the days every member of the series forecasts.
    """
    long = _members(results_by_model, actuals, cfg.interval)
    if long.empty:
        return empty(ENGINE_RESULTS)
    # unclipped centre and upper bound; the lower half-width as the members published it
    long = long.assign(
        c=long["demand"].astype(float),
        lo=long["demand"] - (long["yhat"] - long["yhat_lower"]),
        hi=np.maximum(long["demand_upper"], long["demand"]),
    )
    names = sorted(long["member"].unique())
    wide = long.pivot_table(index=ROW, columns="member", values=["c", "lo", "hi"], aggfunc="first")
    count = long.groupby(SERIES_KEY)["member"].nunique()
    c, lo, hi = (wide[v].reindex(columns=names).to_numpy(float) for v in ("c", "lo", "hi"))
    idx = wide.index.to_frame(index=False)
    series = pd.MultiIndex.from_frame(idx[SERIES_KEY])
    # a day some member lacks (it forecasts fewer days) is left out, never combined from fewer
    # members; a window some member has no fit for is left out alike
    full = np.isfinite(c).sum(axis=1) == count.reindex(series).to_numpy()
    w = _weights(long, actuals, names).reindex(series).to_numpy(float)
    c, lo, hi, w = (np.where(w > 0, v, np.nan) for v in (c, lo, hi, w))
    c, lo, hi, w = c[full], lo[full], hi[full], w[full]
    idx = idx[full].reset_index(drop=True)
    yhat = _wmean(c, w)
    pl, pu = pool_bounds(c, lo, hi, cfg.interval, w)
    lower = np.minimum(np.minimum(pl, _wmean(lo, w)), yhat)
    upper = np.maximum(np.maximum(pu, _wmean(hi, w)), yhat)
    all_fallback = long.groupby(SERIES_KEY)["fallback"].all()
    fb = all_fallback.reindex(pd.MultiIndex.from_frame(idx[SERIES_KEY])).to_numpy(bool)
    raw = idx.assign(yhat=yhat, yhat_lower=lower, yhat_upper=upper)
    act = actuals[SERIES_KEY + ["ds", "y"]] if actuals is not None else None
    parts = [
        finish(raw[mask], act, cfg, label, calibrate=act is not None and label == NAME)
        for mask, label in ((~fb, NAME), (fb, f"{NAME}:fallback"))
        if mask.any()
    ]
    return pd.concat(parts, ignore_index=True).sort_values(ROW, kind="stable", ignore_index=True)
