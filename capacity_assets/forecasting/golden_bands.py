"""The golden record's own bands, calibrated on the champion's out-of-sample errors from every origin.

Why: each contender's future band is calibrated on its own backtest (``intervals``), but the
champion is by selection the contender whose backtest went best, so its band is the most
optimistic of all; capping its upper bound at the contenders' median (the ``consensus`` rule the
pipeline publishes) can make the published band cover less than any contender's own. Measured
against that cap for issue 26 and not adopted: the champion is picked on the very windows whose
errors calibrate it, so they flatter it (``benchmarks/README.md``). Here the band the golden
record publishes is checked against what the champion actually missed by, from the backtest's
origin and every window's (``windows``), at the same horizon: each out-of-sample error is scored in
units of the published future half-width at that many days ahead, on its side (upper for
under-forecasts, lower for over-forecasts), and the future bands are rescaled by the conformal
quantile of those scores, the way ``intervals.factors`` does it: per series, shrunk halfway to its
resource's pool, corrected per horizon block (1-30, 31-90, 91+ days). A band that was too narrow
at some horizon widens there; one that was too wide narrows.

Upper bounds and demand are rescaled unclipped, then clipped to 0-100 as every contender's are.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capacity_assets.forecasting import windows
from capacity_assets.forecasting.engines import intervals
from capacity_assets.schema import SERIES_KEY


def _out_of_sample(
    results_by_model: dict[str, pd.DataFrame], champion: pd.DataFrame, actuals: pd.DataFrame
) -> pd.DataFrame:
    """The champion's backtest and window rows of every series, with their horizon ``h``."""
    parts = []
    for name, mine in champion.groupby("champion", sort=False):
        res = results_by_model.get(name)
        if res is None or res.empty:
            continue
        res = res.merge(mine[SERIES_KEY], on=SERIES_KEY, how="inner")
        parts.append(windows.rows(res, actuals, SERIES_KEY))
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def calibrate(
    golden: pd.DataFrame,
    results_by_model: dict[str, pd.DataFrame],
    actuals: pd.DataFrame,
    interval: float,
) -> pd.DataFrame:
    """``golden`` (the champions' future rows: SERIES_KEY, ds, origin, yhat*, demand*, champion)
    with its bounds rescaled on the champions' out-of-sample errors. Series without a scored
    out-of-sample day keep their bounds."""
    if golden.empty:
        return golden
    g = golden.assign(
        h=(pd.to_datetime(golden["ds"]) - pd.to_datetime(golden["origin"])).dt.days.to_numpy(),
        up=np.maximum(golden["demand_upper"] - golden["demand"], 0.0),
        down=np.maximum(golden["yhat"] - golden["yhat_lower"], 0.0),
    )
    oos = _out_of_sample(results_by_model, g.drop_duplicates(SERIES_KEY), actuals)
    if oos.empty:
        return golden
    # each error against the published half-widths that many days ahead
    scored = oos[SERIES_KEY + ["origin", "ds", "h", "yhat"]].merge(
        g[SERIES_KEY + ["h", "up", "down"]], on=SERIES_KEY + ["h"], how="inner"
    )
    scored = scored.assign(
        yhat_upper=scored["yhat"] + scored["up"], yhat_lower=scored["yhat"] - scored["down"]
    )
    k, ratios = intervals.factors(scored, windows.measured(actuals), interval)
    unclipped = g.assign(
        yhat=g["demand"], yhat_upper=g["demand"] + g["up"], yhat_lower=g["demand"] - g["down"]
    )
    scaled = intervals.rescale(unclipped, k, ratios)
    centre = golden["yhat"].to_numpy(float)
    upper = np.maximum(scaled["yhat_upper"].to_numpy(float), golden["demand"].to_numpy(float))
    lower = scaled["yhat_lower"].to_numpy(float)
    return golden.assign(
        demand_upper=np.maximum(upper, 0.0),
        yhat_upper=np.maximum(np.clip(upper, 0.0, 100.0), centre),
        yhat_lower=np.minimum(np.clip(lower, 0.0, 100.0), centre),
    )
