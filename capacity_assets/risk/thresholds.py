"""Thresholds, sizing targets and server sizes per series: a default, a per-resource override, a
per-server override.

Pure pandas (no Dagster). One rule for every level (the saturation ``threshold`` and the sizing
``target``), most specific first:

1. per server: the hierarchy column ``f"{prefix}{resource}"`` (``threshold_cpu`` … ``threshold_network``,
   ``target_cpu`` … ``target_network``) when the server has a valid value there;
2. per resource: ``CAPACITY_THRESHOLD_CPU`` … (``per_resource``) when it is set;
3. the default: ``CAPACITY_THRESHOLD`` (95) or ``CAPACITY_TARGET`` (80).

A valid level is a number in (0, 100], optionally written with a trailing ``%`` ("92.5", "92.5 %").
A blank cell means "no override". Anything else (text, 0 or below, above 100) is ignored and
reported: the series falls back to the next rule and the problem names the server and the column,
so a typo in a spreadsheet never silently changes what counts as a breach. Hierarchy columns may be
missing entirely; their names match ignoring case and surrounding blanks, like the required ones.

Server sizes come from the optional hierarchy columns ``cpu_cores``, ``memory_gb``, ``disk_gb`` and
``network_gbps`` (a positive number; blank = unknown, anything else ignored and reported).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from capacity_assets.inputs.hierarchy import hierarchy_table
from capacity_assets.schema import RESOURCES, SERIES_KEY, find_column, series_names

THRESHOLD_PREFIX = "threshold_"
TARGET_PREFIX = "target_"
DEFAULT_THRESHOLD = 95.0
DEFAULT_TARGET = 80.0
# resource -> optional hierarchy column with the server's installed capacity, and its unit
SIZE_COLUMNS = {
    "cpu": "cpu_cores",
    "memory": "memory_gb",
    "disk": "disk_gb",
    "network": "network_gbps",
}
UNITS = {"cpu": "cores", "memory": "GB", "disk": "GB", "network": "Gbps"}
LIST_LIMIT = 10  # servers named per problem message


def setting_name(prefix: str, resource: str | None = None) -> str:
    """'threshold_' -> 'CAPACITY_THRESHOLD', with a resource 'CAPACITY_THRESHOLD_CPU' (for messages)."""
    base = "CAPACITY_" + prefix.strip("_").upper()
    return f"{base}_{resource.upper()}" if resource else base


def level_columns(prefix: str) -> dict[str, str]:
    """resource -> the hierarchy column overriding the level per server, e.g. {'cpu': 'threshold_cpu', …}."""
    return {r: f"{prefix}{r}" for r in RESOURCES}


def check_level(value, name: str) -> float:
    """A configured level (default or per-resource setting) as a float; ValueError naming ``name``
    unless it is in (0, 100]."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: expected a percentage in (0, 100]") from None
    if not (0 < v <= 100):
        raise ValueError(f"{name}={value!r}: expected a percentage in (0, 100]")
    return v


def _per_resource(per_resource: Mapping[str, float | None] | None, prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in (per_resource or {}).items():
        r = str(k).strip().lower()
        if r not in RESOURCES:
            raise ValueError(
                f"unknown resource {k!r} in per-resource {setting_name(prefix)} overrides; "
                f"expected one of {', '.join(RESOURCES)}"
            )
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            out[r] = check_level(v, setting_name(prefix, r))
    return out


def _parse(values: pd.Series, upper: float | None, percent: bool) -> tuple[pd.Series, pd.Series]:
    """(numbers, invalid): blank cells are NaN and valid; unparseable or out-of-range cells are NaN and invalid."""
    if pd.api.types.is_bool_dtype(values):
        values = values.astype(object)
    if pd.api.types.is_numeric_dtype(values):
        num = pd.to_numeric(values, errors="coerce").astype("float64")
        blank = values.isna()
    else:
        text = values.astype("string").str.strip()
        blank = (text.isna() | text.eq("")).fillna(True).astype(bool)
        if percent:
            text = text.str.replace(r"\s*%$", "", regex=True)
        num = pd.to_numeric(text.astype(object), errors="coerce").astype("float64")
        num[blank] = np.nan
    ok = np.isfinite(num) & (num > 0)
    if upper is not None:
        ok &= num <= upper
    invalid = ~blank & ~ok
    return num.where(ok), invalid.astype(bool)


def _describe_invalid(
    column: str, servers: pd.Series, raw: pd.Series, expected: str, fallback: str
) -> str:
    pairs = [f"{s!r} = {v!r}" for s, v in zip(servers.head(LIST_LIMIT), raw.head(LIST_LIMIT))]
    more = f" and {len(servers) - LIST_LIMIT} more" if len(servers) > LIST_LIMIT else ""
    return (
        f"hierarchy column {column!r}: {len(servers)} invalid value(s) ignored (expected {expected}), "
        f"{fallback}: {', '.join(pairs)}{more}"
    )


def _hierarchy(hierarchy: pd.DataFrame | None) -> pd.DataFrame:
    if hierarchy is None or hierarchy.empty:
        return pd.DataFrame({"server_id": pd.Series(dtype="string")})
    return hierarchy_table(hierarchy)[0]


def _series_frame(series: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in SERIES_KEY if c not in series.columns]
    if missing:
        raise ValueError(f"series frame is missing columns {missing}; found {list(series.columns)}")
    return pd.DataFrame(
        {
            "server_id": series["server_id"].astype("string"),
            "resource": series["resource"].astype("string"),
        },
        index=series.index,
    )


def _server_values(
    hier: pd.DataFrame,
    servers: pd.Series,
    columns: dict[str, str],
    upper: float | None,
    percent: bool,
    expected: str,
    fallback,
) -> tuple[pd.DataFrame, list[str]]:
    """Long frame (server_id, resource, value) of the valid per-server values among ``servers``, and problems."""
    parts, problems = [], []
    h = hier[hier["server_id"].isin(servers)] if servers is not None else hier
    for resource, name in columns.items():
        col = find_column(h, name)
        if col is None:
            continue
        num, invalid = _parse(h[col], upper, percent)
        if invalid.any():
            problems.append(
                _describe_invalid(
                    str(col),
                    h.loc[invalid, "server_id"],
                    h.loc[invalid, col],
                    expected,
                    fallback(resource),
                )
            )
        valid = num.notna()
        parts.append(
            pd.DataFrame(
                {
                    "server_id": h.loc[valid, "server_id"].astype("string"),
                    "resource": resource,
                    "value": num[valid],
                }
            )
        )
    if not parts:
        return pd.DataFrame(
            {
                "server_id": pd.Series(dtype="string"),
                "resource": pd.Series(dtype="string"),
                "value": pd.Series(dtype="float64"),
            }
        ), problems
    out = pd.concat(parts, ignore_index=True)
    out["resource"] = out["resource"].astype("string")
    return out, problems


def series_levels(
    series: pd.DataFrame,
    hierarchy: pd.DataFrame | None,
    default: float,
    per_resource: Mapping[str, float | None] | None = None,
    column_prefix: str = THRESHOLD_PREFIX,
) -> tuple[pd.Series, list[str]]:
    """The level (threshold or target, %) of every row of ``series`` (columns server_id, resource; one
    row per series or per day, any index) and the problems found in the hierarchy's per-server columns.

    Returns a float Series aligned to ``series.index``, named after the prefix ('threshold', 'target').
    Problems only concern servers that appear in ``series`` (the hierarchy asset checks the whole fleet once).
    ``default`` and ``per_resource`` values must be in (0, 100] (ValueError otherwise: a setting is wrong).
    """
    name = column_prefix.strip("_")
    default = check_level(default, setting_name(column_prefix))
    overrides = _per_resource(per_resource, column_prefix)
    s = _series_frame(series)
    fallback_value = s["resource"].map(
        lambda r: overrides.get(r, default) if pd.notna(r) else default
    )
    out = pd.Series(fallback_value.astype("float64").to_numpy(), index=series.index, name=name)
    if s.empty:
        return out, []

    def fallback(resource: str) -> str:
        if resource in overrides:
            return f"{setting_name(column_prefix, resource)} ({overrides[resource]:g}) used instead"
        return f"{setting_name(column_prefix)} ({default:g}) used instead"

    values, problems = _server_values(
        _hierarchy(hierarchy),
        s["server_id"].dropna().unique(),
        level_columns(column_prefix),
        100.0,
        True,
        "a percentage in (0, 100]",
        fallback,
    )
    if len(values):
        merged = (
            s.reset_index(drop=True).merge(values, on=SERIES_KEY, how="left")["value"].to_numpy()
        )
        out = out.where(np.isnan(merged), merged)
    return out.astype("float64"), problems


def series_sizes(
    series: pd.DataFrame, hierarchy: pd.DataFrame | None
) -> tuple[pd.Series, list[str]]:
    """Installed capacity of every row of ``series`` in its resource's unit (cores, GB, GB, Gbps; NaN
    when unknown), from the optional hierarchy size columns, and the problems found there."""
    s = _series_frame(series)
    out = pd.Series(np.nan, index=series.index, name="size", dtype="float64")
    if s.empty:
        return out, []
    values, problems = _server_values(
        _hierarchy(hierarchy),
        s["server_id"].dropna().unique(),
        SIZE_COLUMNS,
        None,
        False,
        "a positive number",
        lambda r: "planned in percent only",
    )
    if len(values):
        merged = (
            s.reset_index(drop=True).merge(values, on=SERIES_KEY, how="left")["value"].to_numpy()
        )
        out = pd.Series(merged, index=series.index, name="size", dtype="float64")
    return out, problems


def levels_table(
    series: pd.DataFrame,
    hierarchy: pd.DataFrame | None,
    threshold: float = DEFAULT_THRESHOLD,
    threshold_per_resource: Mapping[str, float | None] | None = None,
    target: float = DEFAULT_TARGET,
    target_per_resource: Mapping[str, float | None] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """One row per distinct series of ``series``: server_id, resource, threshold, target; and problems.

    The one call the pipeline needs: its result goes to ``risk_exceptions(thresholds=…)`` and to
    ``capacity_plan(thresholds=…, targets=…)``. A target above its series' threshold would size a
    server to a level that is itself a breach: it is capped at the threshold and reported.
    """
    s = _series_frame(series).drop_duplicates().reset_index(drop=True)
    thr, p1 = series_levels(s, hierarchy, threshold, threshold_per_resource, THRESHOLD_PREFIX)
    tgt, p2 = series_levels(s, hierarchy, target, target_per_resource, TARGET_PREFIX)
    out = s.assign(threshold=thr.to_numpy(), target=tgt.to_numpy())
    problems = p1 + p2
    over = out["target"] > out["threshold"]
    if over.any():
        bad = out[over]
        pairs = [
            f"{n} ({t:g} > {h:g})"
            for n, t, h in zip(series_names(bad, LIST_LIMIT), bad["target"], bad["threshold"])
        ]
        more = f" and {len(bad) - LIST_LIMIT} more" if len(bad) > LIST_LIMIT else ""
        problems.append(
            f"target above threshold for {len(bad)} series, capped at the threshold: "
            f"{', '.join(pairs)}{more}"
        )
        out["target"] = out[["target", "threshold"]].min(axis=1)
    return out, problems


def fleet_problems(
    servers,
    hierarchy: pd.DataFrame | None,
    threshold: float = DEFAULT_THRESHOLD,
    threshold_per_resource: Mapping[str, float | None] | None = None,
    target: float = DEFAULT_TARGET,
    target_per_resource: Mapping[str, float | None] | None = None,
) -> list[str]:
    """Every unusable per-server threshold, target or size, and every target above its threshold, for
    each resource of ``servers``: checked once per run for the whole fleet (the hierarchy asset),
    where the per-batch calls only see their own servers."""
    servers = sorted({str(x) for x in servers})
    grid = pd.DataFrame(
        {
            "server_id": [x for x in servers for _ in RESOURCES],
            "resource": list(RESOURCES) * len(servers),
        }
    )
    levels = levels_table(
        grid, hierarchy, threshold, threshold_per_resource, target, target_per_resource
    )[1]
    return levels + series_sizes(grid, hierarchy)[1]


def per_series(levels, series: pd.DataFrame, name: str) -> pd.Series:
    """``levels`` (a number, a Series indexed by (server_id, resource), or a frame with server_id,
    resource and ``name``) as one float per row of ``series``. ValueError when a series has no level
    or a level is outside (0, 100]: a gap here is a wiring mistake, not something to guess."""
    s = _series_frame(series)
    if isinstance(levels, (int, float, np.integer, np.floating)) and not isinstance(levels, bool):
        return pd.Series(check_level(levels, name), index=series.index, name=name, dtype="float64")
    if isinstance(levels, pd.Series):
        if not (
            isinstance(levels.index, pd.MultiIndex) and set(SERIES_KEY) <= set(levels.index.names)
        ):
            raise ValueError(f"{name} Series must be indexed by (server_id, resource)")
        frame = levels.rename(name).reset_index()
    elif isinstance(levels, pd.DataFrame):
        frame = levels
    else:
        raise TypeError(
            f"{name}: expected a number, a Series or a DataFrame, got {type(levels).__name__}"
        )
    missing = [c for c in SERIES_KEY + [name] if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} frame is missing columns {missing}; found {list(frame.columns)}")
    frame = pd.DataFrame(
        {
            "server_id": frame["server_id"].astype("string"),
            "resource": frame["resource"].astype("string"),
            name: pd.to_numeric(frame[name], errors="coerce").astype("float64"),
        }
    ).drop_duplicates()
    dup = frame[frame.duplicated(SERIES_KEY, keep=False)]
    if len(dup):
        raise ValueError(f"conflicting {name} values for series {series_names(dup)}")
    bad = frame[~((frame[name] > 0) & (frame[name] <= 100))]
    if len(bad):
        raise ValueError(f"{name} outside (0, 100] for series {series_names(bad)}")
    merged = s.reset_index(drop=True).merge(frame, on=SERIES_KEY, how="left")[name]
    if merged.isna().any():
        raise ValueError(f"no {name} for series {series_names(s[merged.isna().to_numpy()])}")
    return pd.Series(merged.to_numpy(), index=series.index, name=name, dtype="float64")
