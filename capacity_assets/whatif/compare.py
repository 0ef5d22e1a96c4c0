"""What a scenario changes against the baseline: exceptions it adds and clears, breach dates it
moves, and the capacity to add or reclaim per department in units.

Pure pandas. ``difference`` gives the object `capacity whatif --json` prints for a scenario (its keys
are a contract, see the README); ``text`` the same for a person.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capacity_assets.risk.plan import ADD, RECLAIM, department_totals
from capacity_assets.schema import RESOURCES, SERIES_KEY

ACTIONS = {ADD: "add_units", RECLAIM: "reclaim_units"}


def _day(value) -> str:
    return pd.Timestamp(value).strftime("%Y-%m-%d")


def _keyed(risk: pd.DataFrame) -> pd.DataFrame:
    columns = [*SERIES_KEY, "first_breach_date", "days_to_breach"]
    if not set(columns) <= set(risk.columns):  # a table not written yet
        risk = pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    out = risk[columns].copy()
    out["first_breach_date"] = pd.to_datetime(out["first_breach_date"])
    return out.astype({"server_id": str, "resource": str})


def with_baseline(risk: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """``risk`` (a scenario's list) with ``baseline_first_breach_date`` (empty when the baseline does
    not list the series: a new exception) and ``days_moved`` (scenario minus baseline, in days:
    negative when the breach comes sooner)."""
    base = _keyed(baseline).rename(columns={"first_breach_date": "baseline_first_breach_date"})
    out = risk.merge(
        base[[*SERIES_KEY, "baseline_first_breach_date"]].astype(
            {"server_id": "string", "resource": "string"}
        ),
        on=SERIES_KEY,
        how="left",
    )
    days = (pd.to_datetime(out["first_breach_date"]) - out["baseline_first_breach_date"]).dt.days
    out["days_moved"] = days.astype("Int64")
    return out


def risk_changes(risk: pd.DataFrame, baseline: pd.DataFrame) -> dict[str, list[dict]]:
    """{new, cleared, moved}: the exceptions only the scenario lists, those only the baseline lists,
    and those both list with another first breach date."""
    s, b = _keyed(risk), _keyed(baseline)
    both = s.merge(b, on=SERIES_KEY, how="outer", suffixes=("", "_base"), indicator=True)
    both = both.sort_values(["first_breach_date", "first_breach_date_base", *SERIES_KEY])
    new = both[both["_merge"] == "left_only"]
    cleared = both[both["_merge"] == "right_only"].sort_values(SERIES_KEY)
    moved = both[
        (both["_merge"] == "both") & (both["first_breach_date"] != both["first_breach_date_base"])
    ]
    return {
        "new": [
            {
                "server_id": r.server_id,
                "resource": r.resource,
                "first_breach_date": _day(r.first_breach_date),
                "days_to_breach": int(r.days_to_breach),
            }
            for r in new.itertuples()
        ],
        "cleared": [
            {"server_id": r.server_id, "resource": r.resource} for r in cleared.itertuples()
        ],
        "moved": [
            {
                "server_id": r.server_id,
                "resource": r.resource,
                "baseline_first_breach": _day(r.first_breach_date_base),
                "scenario_first_breach": _day(r.first_breach_date),
                "days": int((r.first_breach_date - r.first_breach_date_base).days),
            }
            for r in moved.itertuples()
        ],
    }


def plan_changes(plan: pd.DataFrame, baseline: pd.DataFrame) -> list[dict]:
    """Per department, resource and action (add, reclaim): the scenario's units minus the
    baseline's, where they differ. Adds are positive; reclaims negative like the plan's
    ``change_units`` (-16 GB: 16 GB more to give back). Series without a size have no units."""
    keys = ["department", "resource", "unit"]
    s, b = department_totals(plan), department_totals(baseline)
    both = s.merge(b, on=keys, how="outer", suffixes=("", "_base"))
    rank = {r: i for i, r in enumerate(RESOURCES)}
    both = both.assign(_r=both["resource"].map(rank)).sort_values(["department", "_r"])
    out = []
    for row in both.itertuples():
        for action, column in ACTIONS.items():
            now = getattr(row, column)
            was = getattr(row, f"{column}_base")
            delta = round(
                (0.0 if pd.isna(now) else float(now)) - (0.0 if pd.isna(was) else float(was)), 6
            )
            if delta != 0:
                out.append(
                    {
                        "department": row.department,
                        "resource": row.resource,
                        "action": action,
                        "change_units": delta + 0.0,
                        "unit": row.unit,
                    }
                )
    return out


def difference(
    name: str,
    risk: pd.DataFrame,
    plan: pd.DataFrame,
    baseline_risk: pd.DataFrame,
    baseline_plan: pd.DataFrame,
) -> dict:
    """The scenario against the baseline, as `capacity whatif --json` prints it."""
    return {
        "scenario": name,
        **risk_changes(risk, baseline_risk),
        "plan": plan_changes(plan, baseline_plan),
    }


def _units(action: str, value: float, unit: str) -> str:
    """'add 16 GB more', 'reclaim 104 GB less' (reclaims are negative: -5 is 5 more to give back)."""
    more = value > 0 if action == ADD else value < 0
    return f"{action} {abs(value):g} {unit} {'more' if more else 'less'}"


def text(diff: dict, notes: list[str] = ()) -> str:
    """The difference for a person: one block per scenario."""
    lines = [f"scenario {diff['scenario']}:"]
    if not any(diff[k] for k in ("new", "cleared", "moved", "plan")):
        lines.append("  no change against the baseline")
    if diff["new"]:
        lines.append(f"  new exceptions ({len(diff['new'])}):")
        lines += [
            f"    {d['server_id']} {d['resource']}: breaches {d['first_breach_date']} "
            f"(in {d['days_to_breach']} days)"
            for d in diff["new"]
        ]
    if diff["cleared"]:
        lines.append(f"  cleared exceptions ({len(diff['cleared'])}):")
        lines += [f"    {d['server_id']} {d['resource']}" for d in diff["cleared"]]
    if diff["moved"]:
        lines.append(f"  breach dates moved ({len(diff['moved'])}):")
        lines += [
            f"    {d['server_id']} {d['resource']}: {d['baseline_first_breach']} -> "
            f"{d['scenario_first_breach']} ({d['days']:+d} days)"
            for d in diff["moved"]
        ]
    if diff["plan"]:
        lines.append("  capacity to add or reclaim, against the baseline's plan:")
        lines += [
            f"    {d['department']} {d['resource']}: "
            f"{_units(d['action'], d['change_units'], d['unit'])}"
            for d in diff["plan"]
        ]
    lines += [f"  note: {n}" for n in notes]
    return "\n".join(lines)


def unsized_changes(plan: pd.DataFrame, baseline: pd.DataFrame) -> int:
    """Add or reclaim rows without a size whose action or percentage the scenario changes: the part of
    the plan the units cannot show."""
    cols = [*SERIES_KEY, "action", "change_pct"]
    s = plan[plan["change_units"].isna() & plan["action"].isin(list(ACTIONS))][cols]
    b = baseline[baseline["change_units"].isna() & baseline["action"].isin(list(ACTIONS))][cols]
    both = s.astype({"server_id": str, "resource": str}).merge(
        b.astype({"server_id": str, "resource": str}), how="outer", indicator=True
    )
    return int(np.sum(both["_merge"] != "both"))
