"""A second family of synthetic fleets for the accuracy benchmark, written to be unlike the demo.

``capacity_assets.demo.fleet`` made the models: the challenger's regime detection, fill-and-clean-up
cycles and month-end features mirror its components, so scoring on it alone flatters them. This
generator shares no code or parameter with it and draws what the demo does not have:

* histories of 20-26 months (yearly seasonality is barely identifiable, so Prophet's yearly terms
  are off on most series and the challenger's two-year window is never full);
* heavy-tailed noise: Student-t with 2.5-5 degrees of freedom, plus occasional single-day spikes;
* weekday/weekend business cycles whose amplitude grows with the level (multiplicative), and an
  intra-day cycle on the servers sampled hourly;
* logistic growth towards a plateau, a trend that accelerates in the last 2-5 months of history
  (and keeps accelerating in the hidden months), and plain linear drifts;
* memory leaks with periodic restarts (a sawtooth whose period is not a week or a month);
* outages: a week or more without a single sample on every resource of a server;
* quarter-end peaks (the last business days of March, June, September, December);
* hourly samples for about a third of the servers (the pipeline averages them to days).

About one server in six has a resource that really crosses 95 % within the 90 days after the last
history day, and as many come close without crossing, so risk calls can be scored both ways.

    python benchmarks/fleets.py --servers 40 --seed 0    # prints a summary
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

RESOURCES = ("cpu", "memory", "disk", "network")
DEFAULT_END = pd.Timestamp("2026-10-31")
HIDDEN_MONTHS = 6
HOURLY_SHARE = 0.35
OUTAGE_SHARE = 0.35
SATURATING_SHARE = 0.17  # servers with one resource that crosses 95 % within 90 days of `end`
NEAR_MISS_SHARE = 0.12  # servers with one resource that climbs to 85-92 % and stays there
_SALT = 0x5EED_F1EE7  # a stream of its own: never the demo fleet's draws


def _student_t(rng: np.random.Generator, df: float, n: int) -> np.ndarray:
    """Student-t scaled to unit standard deviation (df > 2)."""
    return rng.standard_t(df, n) / np.sqrt(df / (df - 2))


def _quarter_end(days: pd.DatetimeIndex) -> np.ndarray:
    """1 on the last 4 business days of each quarter, ramping in from the 3 before."""
    qend = days + pd.offsets.QuarterEnd(0)
    bdays_left = np.array([np.busday_count(d.date(), q.date()) for d, q in zip(days, qend)])
    busy = days.dayofweek < 5
    return np.where(busy & (bdays_left <= 3), 1.0, np.where(busy & (bdays_left <= 6), 0.4, 0.0))


def _logistic(t: np.ndarray, start: float, plateau: float, mid: float, width: float) -> np.ndarray:
    return start + (plateau - start) / (1 + np.exp(-(t - mid) / width))


def _trend(
    rng, kind: str, t: np.ndarray, n_hist: int, level: float, target: float | None
) -> np.ndarray:
    """Level path over days ``t`` (0 = first history day). ``target``: value reached ~day n_hist+45."""
    end = n_hist - 1
    if kind == "flat":
        return np.full(len(t), level) + rng.uniform(-0.002, 0.002) * level * (t - end) / 30
    if kind == "linear":
        goal = target if target is not None else level * rng.uniform(1.1, 1.6)
        slope = (goal - level) / (end + 45)
        return level + slope * t
    if kind == "logistic":
        plateau = target if target is not None else min(level * rng.uniform(1.5, 2.5), 80.0)
        mid = end + rng.uniform(-200, 30) if target is None else end + rng.uniform(-20, 40)
        width = rng.uniform(25, 70)
        return _logistic(t, level, plateau + (6.0 if target is not None else 0.0), mid, width)
    if kind == "accelerating":
        k = int(rng.uniform(60, 150))  # acceleration starts 2-5 months before the end
        t0 = end - k
        goal = target if target is not None else level + rng.uniform(8, 20)
        c = (goal - level) / (end + 45 - t0) ** 2
        return level + 0.002 * level * t / 30 + c * np.maximum(t - t0, 0) ** 2
    raise ValueError(kind)


def generate(
    servers: int = 40, seed: int = 0, end=None, future_months: int = HIDDEN_MONTHS
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics, series info) of a fleet; metrics has the pipeline's input columns (server_id,
    resource, timestamp, utilization_pct), history ending at ``end`` plus ``future_months`` hidden.

    ``info`` has one row per series: kind of trend, whether it was drawn to saturate or nearly so,
    history months and whether the server is sampled hourly. Server i always draws from
    ``default_rng([_SALT, seed, i])``, so fleets nest like the demo's.
    """
    end = DEFAULT_END if end is None else pd.Timestamp(end).normalize()
    stop = end + pd.DateOffset(months=future_months)
    frames, info = [], []
    n_sat = np.floor(np.arange(1, servers + 1) * SATURATING_SHARE) - np.floor(
        np.arange(servers) * SATURATING_SHARE
    )
    n_near = np.floor(np.arange(1, servers + 1) * NEAR_MISS_SHARE + 0.5) - np.floor(
        np.arange(servers) * NEAR_MISS_SHARE + 0.5
    )
    for i in range(servers):
        rng = np.random.default_rng([_SALT, seed, i])
        months = int(rng.integers(20, 27))
        start = end - pd.DateOffset(months=months) + pd.Timedelta(days=1)
        days = pd.date_range(start, stop, freq="D")
        n, n_hist = len(days), int((end - start).days) + 1
        t = np.arange(n, dtype=float)
        dow = days.dayofweek.to_numpy()
        weekend = dow >= 5
        qe = _quarter_end(days)
        business = rng.random() < 0.6
        hourly = rng.random() < HOURLY_SHARE
        sid = f"{['svc', 'job', 'store', 'edge'][int(rng.integers(4))]}{i:03d}.{['east', 'west', 'dc2'][int(rng.integers(3))]}"
        special = "saturate" if n_sat[i] else ("near" if n_near[i] else "")
        special_res = int(rng.choice(4, p=[0.35, 0.2, 0.3, 0.15])) if special else -1
        observed = np.ones(n, bool)
        if rng.random() < OUTAGE_SHARE:  # a week or more without samples, anywhere in history
            length = int(rng.integers(7, 22))
            at = int(rng.integers(30, n_hist - length - 10))
            observed[at : at + length] = False
        if rng.random() < 0.1:  # a few also lose a week in the hidden months
            at = int(rng.integers(n_hist + 5, n - 10))
            observed[at : at + int(rng.integers(7, 10))] = False
        observed &= rng.random(n) > rng.uniform(0.0, 0.02)  # scattered missing days

        for r, resource in enumerate(RESOURCES):
            target = None
            if r == special_res:
                # saturating: the level path reaches ~97-110 % about 45 days after the end, so the
                # first crossing of 95 falls within the 90-day window; near miss: it tops out at 85-92
                target = rng.uniform(97, 112) if special == "saturate" else rng.uniform(84, 91)
            if resource == "cpu":
                level = rng.uniform(8, 45) if target is None else rng.uniform(30, 55)
                kind = rng.choice(
                    ["flat", "linear", "logistic", "accelerating"], p=[0.35, 0.25, 0.2, 0.2]
                )
                if target is not None:
                    kind = rng.choice(["logistic", "accelerating", "linear"])
                path = _trend(rng, kind, t, n_hist, level, target)
                amp = rng.uniform(0.15, 0.55) if business else rng.uniform(0.0, 0.1)
                y = path * (
                    1 + amp * np.where(weekend, -1.0, 0.4)
                )  # amplitude grows with the level
                y += path * rng.uniform(0.0, 0.25) * qe * (rng.random() < 0.4)
                df_ = rng.uniform(2.5, 5.0)
                y += (0.6 + 0.06 * path) * rng.uniform(0.6, 1.6) * _student_t(rng, df_, n)
                spikes = rng.random(n) < rng.uniform(0.001, 0.006)
                y[spikes] += rng.uniform(10, 35, spikes.sum())
            elif resource == "memory":
                level = rng.uniform(25, 60) if target is None else rng.uniform(40, 60)
                kind = rng.choice(["flat", "linear", "logistic"], p=[0.5, 0.3, 0.2])
                if target is not None:
                    kind = rng.choice(["logistic", "linear", "accelerating"])
                path = _trend(rng, kind, t, n_hist, level, target)
                y = path.copy()
                leak = rng.random() < 0.5 and target is None
                if leak:  # a leak that grows memory until the periodic restart frees it
                    period = rng.uniform(9, 40)
                    height = rng.uniform(5, min(25, 88 - level))
                    phase = rng.uniform(0, period)
                    y += height * (((t + phase) % period) / period) - height / 2
                y += rng.uniform(0.3, 1.5) * _student_t(rng, rng.uniform(3, 6), n)
                kind = f"{kind}+leak" if leak else kind
            elif resource == "disk":
                level = rng.uniform(20, 70) if target is None else rng.uniform(35, 60)
                kind = rng.choice(
                    ["flat", "linear", "logistic", "accelerating"], p=[0.25, 0.4, 0.25, 0.1]
                )
                if target is not None:
                    kind = rng.choice(["logistic", "linear", "accelerating"])
                path = _trend(rng, kind, t, n_hist, level, target)
                y = path + path * rng.uniform(0.0, 0.15) * qe * (rng.random() < 0.3)
                y += rng.uniform(0.05, 0.5) * _student_t(rng, rng.uniform(2.5, 5), n)
                if target is None and rng.random() < 0.2:  # one archive job deletes a chunk
                    at = int(rng.integers(n_hist // 3, n))
                    y[at:] -= rng.uniform(5, 15)
            else:  # network
                idle = rng.random() < 0.25 and target is None
                level = (
                    rng.uniform(0.3, 2.5)
                    if idle
                    else (rng.uniform(5, 40) if target is None else rng.uniform(30, 50))
                )
                kind = (
                    "flat"
                    if idle
                    else rng.choice(["flat", "linear", "logistic"], p=[0.5, 0.3, 0.2])
                )
                if target is not None:
                    kind = rng.choice(["logistic", "accelerating", "linear"])
                path = _trend(rng, kind, t, n_hist, level, target)
                amp = rng.uniform(0.2, 0.7) if business else rng.uniform(0.0, 0.15)
                y = (
                    path
                    * (1 + amp * np.where(weekend, -1.0, 0.4))
                    * (1 + 0.3 * qe * (rng.random() < 0.5))
                )
                y *= np.exp(rng.uniform(0.03, 0.15) * _student_t(rng, rng.uniform(2.5, 5), n))
                bursts = rng.random(n) < rng.uniform(0.002, 0.01)
                y[bursts] *= rng.uniform(1.3, 2.2, bursts.sum())
                kind = "idle" if idle else kind
            y = np.clip(y, 0.0, 100.0)
            info.append(
                {
                    "server_id": sid,
                    "resource": resource,
                    "kind": str(kind),
                    "special": special if r == special_res else "",
                    "months": months,
                    "hourly": hourly,
                }
            )
            keep = np.flatnonzero(observed)
            if hourly:  # 24 samples a day around the daily value: business-hours hump, own noise
                hours = np.arange(24)
                hump = np.where((hours >= 8) & (hours <= 18), 1.0, -11 / 13) * (
                    0.25 if business else 0.08
                )
                hump = hump - hump.mean()
                vals = y[keep][:, None] * (1 + hump[None, :])
                vals += rng.normal(0, 0.5 + 0.03 * y[keep][:, None], (len(keep), 24))
                ts = (
                    days[keep].to_numpy()[:, None] + (hours * np.timedelta64(1, "h"))[None, :]
                ).ravel()
                frames.append(
                    pd.DataFrame(
                        {
                            "server_id": sid,
                            "resource": resource,
                            "timestamp": ts,
                            "utilization_pct": np.clip(vals.ravel(), 0.0, 100.0),
                        }
                    )
                )
            else:
                frames.append(
                    pd.DataFrame(
                        {
                            "server_id": sid,
                            "resource": resource,
                            "timestamp": days[keep],
                            "utilization_pct": y[keep],
                        }
                    )
                )
    metrics = pd.concat(frames, ignore_index=True)
    return metrics, pd.DataFrame(info)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    metrics, info = generate(a.servers, a.seed)
    print(
        f"{len(metrics):,} samples, {len(info)} series, {info['hourly'].mean():.0%} hourly series"
    )
    print(info.groupby(["resource", "kind"]).size().to_string())
    print(info[info["special"] != ""].to_string())


if __name__ == "__main__":
    main()
