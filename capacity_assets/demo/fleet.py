"""A synthetic server fleet for the demo, the tests and the accuracy benchmarks.

Real utilisation data is confidential, yet every engine, report and dashboard needs data that
misbehaves the way a production fleet does: weekday/weekend and yearly seasonality, month-end
batches, growth, migrations, disks that fill and get cleaned up, near-idle network links, spikes,
missing days, brand-new servers, and a minority of servers really heading for saturation.

Every server draws from its own RNG seeded with (seed, index), so fleets nest: 210 servers are the
200-server fleet plus 10 more, with the same ids and the same data. The history's noise comes from a
different stream than the hidden future's, so ``future_months`` never changes the history. The RNG
draws are per server (a few calls each); everything else is numpy over a (series x days) matrix, so
2,000 servers x 4 resources x 36 months take seconds.

    python -m capacity_assets.demo.fleet OUT_DIR --servers 2000 --months 36
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from capacity_assets.schema import RESOURCES

DEFAULT_END = pd.Timestamp("2026-10-31")  # fixed, so a seed always gives the same fleet
BREACH_PCT = 95.0
SATURATING_SHARE = 0.10  # servers with one resource whose trend crosses BREACH_PCT after `end`
SATURATION_DAYS = (2, 120)  # ... this many days after `end`
UNASSIGNED_SHARE = 0.01  # servers left out of hierarchy.csv, so reports show 'Unassigned'
NEW_SERVER_SHARE = 0.03  # servers commissioned 45-300 days before `end` (short histories)

HIERARCHY_COLUMNS = ["server_id", "department", "app_manager", "application", "environment"]
METRIC_DTYPES = {
    "server_id": "string",
    "resource": "string",
    "timestamp": "datetime64[ns]",
    "utilization_pct": "float64",
}

# department -> (share of servers, yearly profile, {application: app manager})
DEPARTMENTS = {
    "Payments": (
        0.16,
        "retail",
        {
            "Card Authorisation": "Priya Raman",
            "Payment Gateway": "Tomasz Nowak",
            "Settlement Engine": "Amara Okafor",
            "Fraud Scoring": "Priya Raman",
        },
    ),
    "Retail Banking": (
        0.18,
        "retail",
        {
            "Online Banking": "Sofia Lindqvist",
            "Mobile App Backend": "Daniel Brooks",
            "Core Accounts": "Hiroshi Tanaka",
            "Loan Origination": "Sofia Lindqvist",
        },
    ),
    "Risk & Compliance": (
        0.10,
        "fiscal",
        {
            "AML Screening": "Fatima Haddad",
            "Credit Risk Engine": "Marcus Webb",
            "Regulatory Reporting": "Fatima Haddad",
        },
    ),
    "HR Systems": (
        0.07,
        "fiscal",
        {
            "Payroll": "Elena Petrova",
            "Talent Portal": "Jamal Carter",
            "Time & Attendance": "Elena Petrova",
        },
    ),
    "Data Platform": (
        0.17,
        "data",
        {
            "Data Lake": "Chen Wei",
            "ETL Orchestrator": "Lucía Fernández",
            "BI Warehouse": "Chen Wei",
            "Stream Ingest": "Oliver Grant",
        },
    ),
    "Customer Care": (
        0.10,
        "retail",
        {"Contact Centre": "Aisha Mensah", "CRM": "Liam O'Connor", "Ticketing": "Aisha Mensah"},
    ),
    "Marketing": (
        0.10,
        "retail",
        {
            "Campaign Manager": "Nora Jensen",
            "Web CMS": "Rafael Souza",
            "Recommendation Service": "Nora Jensen",
        },
    ),
    "Supply Chain": (
        0.12,
        "retail",
        {
            "Procurement Portal": "Gabriel Dubois",
            "Inventory Service": "Meera Iyer",
            "Logistics Tracker": "Gabriel Dubois",
        },
    ),
}
ROLES = ("web", "app", "db", "batch", "cache", "file")
ROLE_SHARES = (0.24, 0.26, 0.15, 0.12, 0.10, 0.13)
DATA_ROLE_SHARES = (0.05, 0.15, 0.20, 0.35, 0.05, 0.20)  # Data Platform: mostly batch and storage
ENVIRONMENTS = (("prod", "prd", 0.55), ("staging", "stg", 0.20), ("dev", "dev", 0.25))
WEEK = np.array([0.30, 0.35, 0.35, 0.30, 0.15, -0.65, -0.80])  # Mon..Sun, sums to 0

# Columns of the per-server uniform draws. Append new parameters at the end (never reorder):
# the column index is what keeps existing seeds' fleets unchanged.
_SERVER_COLS = (
    "dept",
    "app",
    "env",
    "role",
    "sat",
    "sat_res",
    "sat_days",
    "sat_slope",
    "shift_on",
    "shift_at",
    "new_on",
    "new_days",
    "gap_on",
    "gap_at",
    "gap_len",
    "drop_rate",
    "unassigned",
)
_SERIES_COLS = (
    "base",
    "weekly",
    "yearly",
    "me_on",
    "me_amp",
    "growth_on",
    "growth",
    "shift_f",
    "noise",
    "spike_p",
    "kind",
    "saw_height",
    "saw_rate",
    "phase",
    "drop_rate",
)
_K = 96
_S = {name: j for j, name in enumerate(_SERVER_COLS)}
_R = {name: len(_SERVER_COLS) + 4 * j for j, name in enumerate(_SERIES_COLS)}  # 4 columns each
assert len(_SERVER_COLS) + 4 * len(_SERIES_COLS) <= _K


def _pick(u: np.ndarray, shares) -> np.ndarray:
    cum = np.cumsum(shares) / np.sum(shares)
    return np.minimum(np.searchsorted(cum, u, side="right"), len(cum) - 1)


def _lowdisc(seed: int, salt: float, n: int) -> np.ndarray:
    """Golden-ratio sequence: a share p of *every* prefix of servers satisfies u < p (+-1 server).

    Used for the saturating and unassigned servers, so a 12-server test fleet has its one
    saturating server and a 200-server demo its two unassigned ones, whatever the seed.
    """
    offset = (seed * 0.7548776662466927 + salt) % 1.0
    return (offset + np.arange(n) * 0.6180339887498949) % 1.0


def _calendar(end, months: int, future_months: int) -> tuple[pd.DatetimeIndex, int]:
    end = DEFAULT_END if end is None else pd.Timestamp(end).normalize()
    start = end - pd.DateOffset(months=months) + pd.Timedelta(days=1)
    stop = end + pd.DateOffset(months=future_months)
    return pd.date_range(start, stop, freq="D"), int((end - start).days) + 1


def _bump(doy: np.ndarray, centre: float, width: float) -> np.ndarray:
    d = (doy - centre + 182.625) % 365.25 - 182.625  # circular distance in days
    return np.exp(-0.5 * (d / width) ** 2)


def _yearly_profiles(days: pd.DatetimeIndex) -> dict[str, np.ndarray]:
    doy = days.dayofyear.to_numpy(float)
    return {
        # retail peak: Black Friday to Christmas, and a smaller January sales echo
        "retail": _bump(doy, 338, 18) + 0.35 * _bump(doy, 10, 7),
        # fiscal year end (31 March), year-end close, half-year close
        "fiscal": _bump(doy, 88, 9) + 0.7 * _bump(doy, 361, 6) + 0.35 * _bump(doy, 180, 6),
        # analytics: busier in winter, August holiday dip
        "data": 0.5 * np.cos(2 * np.pi * (doy - 30) / 365.25),
    }


def _month_end(days: pd.DatetimeIndex) -> np.ndarray:
    to_end = (days.days_in_month - days.day).to_numpy()
    dom = days.day.to_numpy()
    return np.select([to_end == 0, to_end == 1, dom == 1, dom == 2], [1.0, 0.6, 0.5, 0.2], 0.0)


def _draws(seed: int, servers: int, n_hist: int, n_fut: int):
    """Every random number, drawn server by server from streams seeded with (seed, i)."""
    if seed < 0:
        raise ValueError("seed must be >= 0")
    n, rows = n_hist + n_fut, 4 * servers
    P = np.empty((servers, _K))
    Z = np.empty((rows, n), np.float32)  # noise
    U = np.empty((rows, n), np.float32)  # spikes and per-series missing days
    D = np.empty((servers, n), np.float32)  # whole-server missing days (collector outages)
    for i in range(servers):
        r = slice(4 * i, 4 * i + 4)
        rng = np.random.default_rng([seed, i])
        P[i] = rng.random(_K)
        Z[r, :n_hist] = rng.standard_normal((4, n_hist), dtype=np.float32)
        U[r, :n_hist] = rng.random((4, n_hist), dtype=np.float32)
        D[i, :n_hist] = rng.random(n_hist, dtype=np.float32)
        if n_fut:  # the hidden future: its own stream, so it never alters the history
            fut = np.random.default_rng([seed, i, 1])
            Z[r, n_hist:] = fut.standard_normal((4, n_fut), dtype=np.float32)
            U[r, n_hist:] = fut.random((4, n_fut), dtype=np.float32)
            D[i, n_hist:] = fut.random(n_fut, dtype=np.float32)
    return P, Z, U, D


def _simulate(servers: int, months: int, seed: int, end, future_months: int) -> dict:
    """The fleet as matrices: values and an observed-mask of shape (servers*4, days)."""
    days, n_hist = _calendar(end, months, future_months)
    n = len(days)
    P, Z, U, D = _draws(seed, servers, n_hist, n - n_hist)
    S = lambda name: P[:, _S[name]]  # noqa: E731  (servers,)
    R = lambda name: P[:, _R[name] : _R[name] + 4]  # noqa: E731  (servers, 4)
    CPU, MEM, DISK, NET = range(4)

    # --- who is who
    dept_names = list(DEPARTMENTS)
    dept = _pick(S("dept"), [DEPARTMENTS[d][0] for d in dept_names])
    app_names = [list(DEPARTMENTS[d][2]) for d in dept_names]
    app = np.array(
        [app_names[d][int(u * len(app_names[d]))] for d, u in zip(dept, S("app"))], dtype=object
    )
    env = _pick(S("env"), [e[2] for e in ENVIRONMENTS])
    is_data = np.array([dept_names[d] == "Data Platform" for d in dept])
    role = np.where(is_data, _pick(S("role"), DATA_ROLE_SHARES), _pick(S("role"), ROLE_SHARES))
    ids = [f"{ROLES[r]}-{ENVIRONMENTS[e][1]}-{i:05d}" for i, (r, e) in enumerate(zip(role, env))]
    business = ((role <= 1) & (env == 0))[:, None]  # prod web/app: people drive the load
    env_scale = np.array([1.0, 0.7, 0.5])[env][:, None]
    prof_name = np.array([DEPARTMENTS[d][1] for d in dept_names])[dept]

    # --- per-series parameters, (servers, 4)
    lo_hi = lambda u, lo, hi: lo + (hi - lo) * u  # noqa: E731
    ub, kind = R("base"), R("kind")
    idle_net = kind[:, NET] < 0.40
    base = np.stack(
        [
            lo_hi(ub[:, CPU], 5, 40),
            lo_hi(ub[:, MEM], 30, 70),
            lo_hi(ub[:, DISK], 12, 55),
            lo_hi(ub[:, NET], 4, 30),
        ],
        axis=1,
    )
    base[:, [CPU, NET]] *= env_scale
    base[idle_net, NET] = lo_hi(ub[idle_net, NET], 0.2, 1.5)

    uw = R("weekly")
    weekly = np.zeros_like(base)
    weekly[:, CPU] = np.where(
        business[:, 0], lo_hi(uw[:, CPU], 0.4, 0.8), lo_hi(uw[:, CPU], 0.05, 0.25)
    )
    weekly[:, NET] = np.where(
        business[:, 0], lo_hi(uw[:, NET], 0.5, 0.9), lo_hi(uw[:, NET], 0.1, 0.3)
    )
    weekly[:, MEM] = lo_hi(uw[:, MEM], 0.02, 0.08)
    weekly[:, [CPU, NET]] *= np.where(env == 0, 1.0, 0.3)[:, None]
    weekly *= base  # as pct points
    weekly[idle_net, NET] = 0.0

    uy = R("yearly")
    yearly = (
        np.stack(
            [
                lo_hi(uy[:, CPU], 3, 12),
                lo_hi(uy[:, MEM], 1, 5),
                np.zeros(servers),
                lo_hi(uy[:, NET], 2, 10),
            ],
            axis=1,
        )
        * np.where(env == 0, 1.0, 0.3)[:, None]
    )
    yearly[idle_net, NET] = 0.0

    month_end_dept = np.isin(
        np.array(dept_names)[dept], ["Payments", "Risk & Compliance", "HR Systems"]
    )
    p_me = np.where(role == 3, 0.9, np.where(month_end_dept, 0.5, 0.1))[:, None]
    ume = R("me_amp")
    month_end = np.stack(
        [
            lo_hi(ume[:, CPU], 8, 25),
            lo_hi(ume[:, MEM], 2, 8),
            lo_hi(ume[:, DISK], 1, 4),
            lo_hi(ume[:, NET], 4, 15),
        ],
        axis=1,
    )
    month_end *= R("me_on") < p_me
    month_end[idle_net, NET] = 0.0

    # migrations: one level shift on every resource of ~15 % of servers
    tau_first = -(n_hist - 1)
    shift_on = (S("shift_on") < 0.15) & (n_hist >= 120)
    shift_at = np.round(lo_hi(S("shift_at"), tau_first + 30, -30)).astype(int)
    us = R("shift_f")
    factor = np.stack(
        [
            lo_hi(us[:, CPU], 0.55, 1.45),
            lo_hi(us[:, MEM], 0.75, 1.25),
            lo_hi(us[:, DISK], 0.4, 0.8),
            lo_hi(us[:, NET], 0.55, 1.45),
        ],
        axis=1,
    )
    shift = np.where(shift_on[:, None], np.minimum(base * factor, 70.0) - base, 0.0)
    shift[idle_net, NET] = 0.0

    # disks: 40 % sawtooth (fill, clean up), 30 % steady fill, the rest flat
    saw = np.zeros_like(base)
    saw[:, DISK] = np.where(kind[:, DISK] < 0.40, lo_hi(R("saw_height")[:, DISK], 12, 30), 0.0)
    saw_rate = lo_hi(R("saw_rate")[:, DISK], 0.05, 0.25)
    # memory: a leak on ~1 in 10 web/app servers, until a restart every 7-30 days
    leak = np.where((kind[:, MEM] > 0.90) & (role <= 1), lo_hi(R("saw_height")[:, MEM], 4, 12), 0.0)
    leak_period = np.round(lo_hi(R("saw_rate")[:, MEM], 7, 30))
    saw[:, DISK] = np.minimum(saw[:, DISK], np.maximum(78.0 - base[:, DISK] - shift[:, DISK], 0.0))

    ug, gon = R("growth"), R("growth_on")
    growth = (
        np.stack(
            [
                lo_hi(ug[:, CPU], 2, 15),
                lo_hi(ug[:, MEM], 2, 12),
                lo_hi(ug[:, DISK], 5, 25),
                lo_hi(ug[:, NET], 1, 10),
            ],
            axis=1,
        )
        / 365.25
    )
    grow_on = np.where(np.arange(4) == DISK, (kind >= 0.40) & (kind < 0.70), gon < 0.30)
    growth = np.where(grow_on, growth, np.where(gon > 0.94, -0.3 * growth, 0.0))  # a few decline
    growth[idle_net, NET] = 0.0

    noise = np.stack(
        [
            lo_hi(R("noise")[:, CPU], 1.5, 5.0),
            lo_hi(R("noise")[:, MEM], 0.5, 2.0),
            lo_hi(R("noise")[:, DISK], 0.1, 0.6),
            lo_hi(R("noise")[:, NET], 0.1, 0.4),
        ],
        axis=1,
    )
    spike_p = np.stack(
        [
            lo_hi(R("spike_p")[:, CPU], 0.002, 0.01),
            np.zeros(servers),
            np.zeros(servers),
            lo_hi(R("spike_p")[:, NET], 0.005, 0.02),
        ],
        axis=1,
    )

    # keep the healthy series healthy: peak level by 120 days after `end` below ~85 %
    extra = (
        0.35 * weekly + yearly + month_end + saw + np.where(np.arange(4) == MEM, leak[:, None], 0)
    )
    peak = base + shift + extra + 3 * noise * np.array([1, 1, 1, 0])
    scale = np.clip((82.0 - base - shift) / np.maximum(extra, 1e-9), 0.0, 1.0)
    weekly, yearly, month_end = weekly * scale, yearly * scale, month_end * scale
    peak = np.minimum(peak, 82.0)
    span = (n_hist - 1) + 120
    growth = np.where(growth > 0, np.minimum(growth, np.maximum(85.0 - peak, 0.0) / span), growth)

    # the ones heading for saturation: one resource ramps so its trend crosses 95 % in 2-120 days
    sat = _lowdisc(seed, 0.2, servers) < SATURATING_SHARE
    sat_res = _pick(S("sat_res"), [0.25, 0.30, 0.35, 0.10])
    sat_mask = sat[:, None] & (np.arange(4) == sat_res[:, None])
    sat_days = lo_hi(S("sat_days"), *SATURATION_DAYS)
    sat_slope = lo_hi(S("sat_slope"), 0.08, 0.35)  # pct points a day
    base = np.where(sat_mask, np.minimum(base, 50.0), base)
    if np.any(idle_net & sat_mask[:, NET]):  # an idle link cannot saturate: make it a busy one
        busy = idle_net & sat_mask[:, NET]
        base[busy, NET] = lo_hi(ub[busy, NET], 10, 30)
        idle_net = idle_net & ~busy
    for arr in (shift, growth, saw):
        arr[sat_mask] = 0.0
    weekly = np.where(sat_mask, np.minimum(weekly, 6.0), weekly)
    leak = np.where(sat_mask[:, MEM], 0.0, leak)

    # --- the (series x days) matrix; series i*4+r is server i, resource r
    col = lambda a: a.reshape(-1, 1)  # noqa: E731
    tau = (np.arange(n) + tau_first).astype(float)[None, :]
    dow = days.dayofweek.to_numpy()
    profiles = _yearly_profiles(days)
    prof = np.stack([profiles[p] for p in prof_name])  # (servers, n)
    V = np.repeat(prof, 4, axis=0) * col(yearly)
    V += col(base) + col(weekly) * WEEK[dow][None, :] + col(month_end) * _month_end(days)[None, :]
    V += col(growth) * (tau - tau_first)
    V += col(shift) * (tau >= col(np.repeat(shift_at, 4)))
    phase = col(R("phase") * 365.0)
    V += col(saw) * (
        ((col(np.repeat(saw_rate, 4)) * (tau + phase)) / np.maximum(col(saw), 1e-9)) % 1.0
    )
    mem = slice(MEM, None, 4)
    V[mem] += col(leak) * ((tau + phase[mem]) % col(leak_period)) / col(leak_period)
    sat_i = np.flatnonzero(sat)
    V[4 * sat_i + sat_res[sat_i]] += np.maximum(
        BREACH_PCT
        + col(sat_slope[sat_i]) * (tau - col(sat_days[sat_i]))
        - col(base[sat_i, sat_res[sat_i]]),
        0.0,
    )

    # noise: memory smooth (7-day moving average), network multiplicative and bursty
    Zm = Z[mem].astype(float)
    c = np.concatenate([np.zeros((len(Zm), 1)), np.cumsum(Zm, axis=1)], axis=1)
    k = np.minimum(np.arange(n) + 1, 7)
    Z[mem] = (c[:, 1:] - c[:, np.arange(n) + 1 - k]) / np.sqrt(k)
    add = np.ones(4, bool)
    add[NET] = False
    sd = noise * add
    V += col(sd) * Z
    net = slice(NET, None, 4)
    V[net] *= np.exp(col(noise[:, NET]) * Z[net] - col(noise[:, NET]) ** 2 / 2)
    spike = U < col(spike_p)
    mag = U / np.maximum(col(spike_p), 1e-12)  # uniform 0-1 again, given a spike
    r, d = np.nonzero(spike[CPU::4])  # cpu spikes add 10-45 points
    V[CPU::4][r, d] += 10 + 35 * mag[CPU::4][r, d]
    r, d = np.nonzero(spike[NET::4])  # network bursts multiply a busy link, nudge an idle one
    Vn, m = V[NET::4], mag[NET::4][r, d]
    Vn[r, d] = np.where(idle_net[r], Vn[r, d] + 0.5 + m, Vn[r, d] * (1.5 + 2.5 * m))
    idle_rows = np.flatnonzero(idle_net) * 4 + NET
    V[idle_rows] = np.clip(V[idle_rows], 0.1, 3.0)
    np.clip(V, 0.0, 100.0, out=V)

    # --- missing days
    tau_i = np.arange(n) + tau_first
    srv_drop = lo_hi(S("drop_rate"), 0.003, 0.03)
    missing = np.repeat(D < srv_drop[:, None], 4, axis=0)
    missing |= U > 1 - col(lo_hi(R("drop_rate"), 0.0, 0.01))  # top of U: disjoint from spikes
    gap_on = S("gap_on") < 0.25
    gap_start = np.round(lo_hi(S("gap_at"), tau_first, -14)).astype(int)
    gap_len = np.round(lo_hi(S("gap_len"), 2, 10)).astype(int)
    in_gap = (
        gap_on[:, None] & (tau_i >= gap_start[:, None]) & (tau_i < (gap_start + gap_len)[:, None])
    )
    new_on = (S("new_on") < NEW_SERVER_SHARE) & ~sat
    first_day = np.where(new_on, -np.round(lo_hi(S("new_days"), 45, 300)), tau_first)
    not_yet = tau_i[None, :] < first_day[:, None]
    missing |= np.repeat(in_gap | not_yet, 4, axis=0)

    return {
        "days": days,
        "n_hist": n_hist,
        "ids": ids,
        "values": V,
        "observed": ~missing,
        "department": np.array(dept_names)[dept],
        "application": app,
        "environment": np.array([e[0] for e in ENVIRONMENTS])[env],
        "unassigned": _lowdisc(seed, 0.55, servers) < UNASSIGNED_SHARE,
    }


def _hierarchy(sim: dict) -> pd.DataFrame:
    keep = ~sim["unassigned"]
    managers = {a: m for _, _, apps in DEPARTMENTS.values() for a, m in apps.items()}
    app = sim["application"][keep]
    return pd.DataFrame(
        {
            "server_id": np.asarray(sim["ids"], object)[keep],
            "department": sim["department"][keep],
            "app_manager": [managers[a] for a in app],
            "application": app,
            "environment": sim["environment"][keep],
        }
    ).astype("string")


def _rows(sim: dict, first: int, last: int):
    """(server index, resource index, day index, value) of the observed rows of servers first..last-1."""
    obs = sim["observed"][4 * first : 4 * last]
    r, d = np.nonzero(obs)
    return first + r // 4, r % 4, d, sim["values"][4 * first : 4 * last][r, d]


def generate_fleet(
    servers: int = 200,
    months: int = 36,
    seed: int = 0,
    end: str | pd.Timestamp | None = None,
    future_months: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics, hierarchy) of a synthetic fleet; history ends at ``end`` (default 2026-10-31).

    With ``future_months`` the frame also holds that many months after ``end`` (timestamp > end),
    for benchmarks that hide them from the engines; the history is the same as without them.
    ``hierarchy`` leaves out ~1 % of servers on purpose (UNASSIGNED_SHARE).
    """
    sim = _simulate(servers, months, seed, end, future_months)
    s, r, d, v = _rows(sim, 0, servers)
    metrics = pd.DataFrame(
        {
            "server_id": pd.array(np.asarray(sim["ids"], object)[s], dtype="string"),
            "resource": pd.array(np.asarray(RESOURCES, object)[r], dtype="string"),
            "timestamp": sim["days"].to_numpy().astype("datetime64[ns]")[d],
            "utilization_pct": v.astype("float64"),
        }
    )
    return metrics, _hierarchy(sim)


def write_fleet(
    out_dir,
    servers: int = 200,
    months: int = 36,
    seed: int = 0,
    end=None,
    future_months: int = 0,
    files: int = 4,
) -> dict:
    """Write ``metrics/part-*.parquet`` (several files, whole servers each) and ``hierarchy.csv``.

    Files are written under temporary names and renamed, and stale parts of an earlier, larger
    write are removed, so re-writing replaces the fleet instead of mixing two.
    """
    out, sim = Path(out_dir), _simulate(servers, months, seed, end, future_months)
    (out / "metrics").mkdir(parents=True, exist_ok=True)
    ids = pa.array(sim["ids"], pa.string())
    res = pa.array(list(RESOURCES), pa.string())
    days = pa.array(sim["days"].to_numpy().astype("datetime64[us]"))
    schema = pa.schema(
        [
            ("server_id", pa.string()),
            ("resource", pa.string()),
            ("timestamp", pa.timestamp("us")),
            ("utilization_pct", pa.float64()),
        ]
    )
    bounds = np.linspace(0, servers, max(1, min(files, servers)) + 1).round().astype(int)
    tag, rows, written = f".tmp-{os.getpid()}", 0, []
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        s, r, d, v = _rows(sim, int(a), int(b))
        table = pa.table(
            [
                ids.take(pa.array(s)),
                res.take(pa.array(r)),
                days.take(pa.array(d)),
                pa.array(v, pa.float64()),
            ],
            schema=schema,
        )
        final = out / "metrics" / f"part-{k}.parquet"
        pq.write_table(table, str(final) + tag, compression="zstd")
        written.append(final)
        rows += len(table)
    hier = out / "hierarchy.csv"
    _hierarchy(sim).to_csv(str(hier) + tag, index=False)
    for stale in set((out / "metrics").glob("part-*.parquet")) - set(written):
        stale.unlink()
    for final in [*written, hier]:
        os.replace(str(final) + tag, final)
    return {"metrics": str(out / "metrics" / "*.parquet"), "hierarchy": str(hier), "rows": rows}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Write the synthetic demo fleet.")
    p.add_argument("out_dir")
    p.add_argument("--servers", type=int, default=200)
    p.add_argument("--months", type=int, default=36)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--end", default=None)
    p.add_argument("--future-months", type=int, default=0)
    p.add_argument("--files", type=int, default=4)
    a = p.parse_args(argv)
    print(
        json.dumps(
            write_fleet(a.out_dir, a.servers, a.months, a.seed, a.end, a.future_months, a.files)
        )
    )


if __name__ == "__main__":
    main()
