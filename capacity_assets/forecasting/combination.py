"""The combination contender: per series, the per-day mean of its best fitted contenders' forecasts.

Why: one 4-month backtest is a noisy judge. On a fleet unlike the one the engines were tuned on, the
plain mean of the engines' forecasts beat every engine and the tournament's pick, because the
engines' errors are far from perfectly correlated and averaging cancels part of them (the oldest
result in forecast combination). It costs no fit: it reuses the contenders' rows.

Members, per series: the ``BEST_K`` (2) fitted contenders with the lowest MAPE over the days of
every origin pooled (the backtest's and the windows', ``windows``), ties in registry order. The mean
of all three was hostage to the weakest: on a fleet where ETS was far off, it lost to the plain mean
of the two others (issue 26; k was chosen on the demo family, ``benchmarks/README.md``). The members
are chosen on the same windows the tournament then scores the combination on, so its pooled error
flatters it a little.

Rule, per series, split, origin and day, over the members (``:fallback`` rows only when no
contender has a real fit, since they are the naive baseline):

* ``yhat`` is the mean of the members' unclipped forecasts (``demand``).
* The bounds are the ``interval`` quantiles of the equal-weight mixture of the members' predictive
  distributions (the *linear pool*), each member a two-piece normal with median ``yhat`` whose
  quantiles are its own bounds. Where members disagree, the pool widens to cover both; where they
  agree, it is about as wide as they are. Never narrower than averaging the bounds (the rule a test
  checks): averaging quantiles is over-confident exactly when the members disagree.
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
CENTRE = "mean"
BEST_K = 2  # members per series: the best by error pooled over every origin (None: all)
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


def _best(long: pd.DataFrame, actuals: pd.DataFrame | None, names: list[str]) -> pd.DataFrame:
    """Per series (index) and member (columns, ``names``): is it among the ``BEST_K`` members with
    the lowest MAPE pooled over every origin (``windows``)? Ties and unscored members go by
    registry order; without actuals, or with ``BEST_K`` None, every member is in."""
    series = pd.MultiIndex.from_frame(long[SERIES_KEY].drop_duplicates())
    present = pd.DataFrame(False, index=series, columns=names)
    for member, rows in long[SERIES_KEY + ["member"]].drop_duplicates().groupby("member"):
        present[member] = series.isin(pd.MultiIndex.from_frame(rows[SERIES_KEY]))
    if actuals is None or BEST_K is None or BEST_K >= len(names):
        return present
    by_member = {
        m: g.rename(columns={"c": "demand_"}).assign(yhat=g["c"].clip(0.0, 100.0))
        for m, g in long[long["split"].isin(windows.OUT_OF_SAMPLE)].groupby("member")
    }
    error, _ = windows.pooled(by_member, actuals, SERIES_KEY)
    error = error.reindex(index=series, columns=names).where(present)
    order = [n for n in CONTENDERS if n in names] + [n for n in names if n not in CONTENDERS]
    e = error[order].fillna(np.finfo(float).max).where(present[order], np.inf).to_numpy()
    rank = np.argsort(np.argsort(e, axis=1, kind="stable"), axis=1, kind="stable")
    chosen = pd.DataFrame(rank < BEST_K, index=series, columns=order)[names]
    # a series with fewer members than BEST_K keeps them all
    return chosen & present


def pool_bounds(
    centre: np.ndarray, lower: np.ndarray, upper: np.ndarray, interval: float
) -> tuple[np.ndarray, np.ndarray]:
    """Central ``interval`` of the equal-weight mixture of two-piece normals, one per column.

    Arrays are (rows, members); NaN marks a missing member. Member j has median ``centre`` and its
    ``(1 - interval) / 2`` and ``(1 + interval) / 2`` quantiles at ``lower`` and ``upper``. The
    mixture's quantile lies between the members' (every CDF is below the level at the smallest
    member quantile and above it at the largest), so Newton's method kept inside that bracket
    converges; to ``_TOL``, the 40 bisection steps it replaced gave the same bounds within 1e-9.
    """
    z = float(ndtri(0.5 + interval / 2))
    s_lo = np.maximum(centre - lower, 1e-9) / z
    s_hi = np.maximum(upper - centre, 1e-9) / z
    have = np.isfinite(centre)
    n = np.maximum(have.sum(axis=1), 1)

    def cdf_pdf(x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = x[:, None] - centre[rows]
        s = np.where(d < 0, s_lo[rows], s_hi[rows])
        u = d / s
        h = have[rows]
        f = np.where(h, ndtr(u), 0.0).sum(axis=1) / n[rows]
        p = np.where(h, np.exp(-0.5 * u * u) / s, 0.0).sum(axis=1) / (n[rows] * np.sqrt(2 * np.pi))
        return f, p

    out = []
    for q, member_q in (((1 - interval) / 2, lower), ((1 + interval) / 2, upper)):
        # Newton's method kept inside a shrinking bracket, bisecting where a step would leave it or
        # shrinks less than half the step before (Numerical Recipes' rtsafe: Newton alone can cycle
        # across a member's kink): a few steps reach what 40 bisections did
        lo, hi = np.nanmin(member_q, axis=1), np.nanmax(member_q, axis=1)
        x = np.clip(np.nanmean(member_q, axis=1), lo, hi)
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


def combine(
    results_by_model: dict[str, pd.DataFrame], actuals: pd.DataFrame | None, cfg: ForecastConfig
) -> pd.DataFrame:
    """ENGINE_RESULTS rows of the combination (model ``combination``, or ``combination:fallback``
    when every member of a series is a fallback) from the fitted contenders' results.

    ``results_by_model``: ``{name: <name>_results}`` as the engines' assets store them (a ``batch``
    column is ignored; names that are not fitted contenders, such as the combination itself, are
    skipped). ``actuals`` (server_id, resource, ds, y; a ``filled`` flag or ``batch`` column are
    ignored) calibrates the bounds, as the registry does for the engines. Backtest and future rows
    cover the days every member of the series forecasts.
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
    keep = _best(long, actuals, names).reindex(series).to_numpy(bool)
    c, lo, hi = (np.where(keep, v, np.nan) for v in (c, lo, hi))
    c, lo, hi, idx = c[full], lo[full], hi[full], idx[full].reset_index(drop=True)
    yhat = np.nanmedian(c, axis=1) if CENTRE == "median" else np.nanmean(c, axis=1)
    pl, pu = pool_bounds(c, lo, hi, cfg.interval)
    lower = np.minimum(np.minimum(pl, np.nanmean(lo, axis=1)), yhat)
    upper = np.maximum(np.maximum(pu, np.nanmean(hi, axis=1)), yhat)
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
