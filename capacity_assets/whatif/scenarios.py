"""The scenarios file (CAPACITY_SCENARIOS, `capacity whatif FILE`): read strictly, checked before
anything runs.

A mapping from scenario name to a list of changes; an empty list is the baseline. Each change is a
one-key mapping, its type to its fields::

    onboard-payments:
      - add_load: {servers: [srv-0001], resources: [cpu, memory], from: 2027-03-01, points: 20}
      - resize: {where: {application: app-07}, resources: [memory], from: 2027-02-01, factor: 2}
      - migrate: {from_server: srv-0003, to_server: srv-0009, resources: [cpu],
                  from: 2027-04-01, share: 0.5}
      - retire: {servers: [srv-0004], from: 2027-05-01, to_server: srv-0010}
    unchanged: []

The file is what a planner edits, so every mistake is refused with the scenario, the change (its
position and type) and the field it is in: ``parse`` checks the shape (types, fields, ranges), and
``check`` what needs the data (servers, hierarchy values, sizes, the forecast's days).
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from capacity_assets.risk.thresholds import SIZE_COLUMNS
from capacity_assets.schema import RESOURCES, find_column

SELECTORS = ("servers", "where")
# change type -> (required fields, optional fields); `servers` or `where` where SELECTORS apply
FIELDS = {
    "add_load": ({"resources", "from"}, {"points", "percent", "ramp_days", *SELECTORS}),
    "resize": ({"from"}, {"resources", "factor", *SIZE_COLUMNS.values(), *SELECTORS}),
    "migrate": ({"from_server", "to_server", "resources", "from", "share"}, set()),
    "retire": ({"from"}, {"to_server", *SELECTORS}),
}
SIZE_RESOURCE = {column: resource for resource, column in SIZE_COLUMNS.items()}


class ScenarioError(ValueError):
    """The scenarios file cannot be used; the message names the scenario, the change and the field."""


@dataclass(frozen=True)
class Change:
    """One change of a scenario; ``position`` counts from 1 in the file's list."""

    kind: str
    position: int
    start: pd.Timestamp  # the file's `from`
    servers: tuple[str, ...] | None = None
    where: tuple[tuple[str, tuple[str, ...]], ...] | None = None  # (column, accepted values)
    resources: tuple[str, ...] = RESOURCES
    points: float | None = None
    percent: float | None = None
    ramp_days: int = 0
    factor: float | None = None
    sizes: tuple[tuple[str, float], ...] = ()  # (resource, new size in its unit)
    from_server: str | None = None
    to_server: str | None = None
    share: float = 1.0

    @property
    def label(self) -> str:
        return f"change {self.position} ({self.kind})"


@dataclass(frozen=True)
class Scenario:
    name: str
    changes: tuple[Change, ...]
    source: str = "scenarios"

    def error(self, change: Change | None, field: str | None, problem: str) -> ScenarioError:
        where = f"{self.source}: scenario {self.name!r}"
        if change is not None:
            where += f", {change.label}"
        if field is not None:
            where += f", field {field!r}"
        return ScenarioError(f"{where}: {problem}")


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice (YAML keeps the last one, silently: a second
    scenario pasted under an existing name would replace the first unseen)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"{key!r} is given twice (lines {seen[key] + 1} and "
                    f"{key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load(path: str | Path) -> tuple[Scenario, ...]:
    """The scenarios of a YAML file, their shape checked (``parse``)."""
    p = Path(path)
    if not p.is_file():
        raise ScenarioError(f"{p}: scenarios file does not exist (CAPACITY_SCENARIOS)")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ScenarioError(f"{p}: not a readable YAML file: {e}") from None
    return parse(data, str(p))


def parse(data, source: str = "scenarios") -> tuple[Scenario, ...]:
    """Scenarios from the file's parsed YAML; ScenarioError on anything malformed."""
    if not isinstance(data, dict) or not data:
        raise ScenarioError(
            f"{source}: expected a mapping from scenario name to a list of changes "
            "(an empty list is the baseline)"
        )
    out = []
    for name, changes in data.items():
        if not isinstance(name, str) or not name.strip():
            raise ScenarioError(f"{source}: scenario name {name!r}: expected a non-empty text")
        scenario = Scenario(name.strip(), (), source)
        if changes is None:
            changes = []
        if not isinstance(changes, list):
            raise scenario.error(None, None, "expected a list of changes ([] for the baseline)")
        out.append(
            Scenario(
                scenario.name,
                tuple(_change(scenario, i, c) for i, c in enumerate(changes, 1)),
                source,
            )
        )
    return tuple(out)


def _change(scenario: Scenario, position: int, raw) -> Change:
    if not (isinstance(raw, dict) and len(raw) == 1):
        raise ScenarioError(
            f"{scenario.source}: scenario {scenario.name!r}, change {position}: expected one of "
            f"{', '.join(FIELDS)} with its fields, e.g. '- add_load: {{...}}'"
        )
    kind, fields = next(iter(raw.items()))
    if kind not in FIELDS:
        raise ScenarioError(
            f"{scenario.source}: scenario {scenario.name!r}, change {position}: unknown change "
            f"type {kind!r}; expected one of {', '.join(FIELDS)}"
        )
    stub = Change(kind, position, pd.Timestamp(0))

    def fail(field, problem):
        return scenario.error(stub, field, problem)

    if not isinstance(fields, dict):
        raise fail(None, "expected a mapping of fields, e.g. {servers: [...], from: 2027-03-01}")
    required, optional = FIELDS[kind]
    unknown = sorted(str(k) for k in fields if k not in required | optional)
    if unknown:
        raise fail(unknown[0], f"unknown field; expected {', '.join(sorted(required | optional))}")
    missing = sorted(required - set(fields))
    if missing:
        raise fail(missing[0], "missing")
    values: dict = {"start": _day(fields["from"], fail)}
    if SELECTORS[0] in optional:
        given = [s for s in SELECTORS if s in fields]
        if len(given) != 1:
            raise fail(
                "servers",
                "give the servers either as a list (servers) or by a hierarchy "
                "column value (where), exactly one of them",
            )
        if given[0] == "servers":
            values["servers"] = _names(fields["servers"], "servers", fail)
        else:
            values["where"] = _where(fields["where"], fail)
    if "resources" in fields:
        values["resources"] = _resources(fields["resources"], fail)
    if kind == "add_load":
        given = [k for k in ("points", "percent") if k in fields]
        if len(given) != 1:
            raise fail("points", "give exactly one of points (percentage points) or percent")
        values[given[0]] = _number(fields[given[0]], given[0], fail)
        if "ramp_days" in fields:
            values["ramp_days"] = _whole(fields["ramp_days"], "ramp_days", fail)
    elif kind == "resize":
        sizes = [c for c in SIZE_RESOURCE if c in fields]
        if ("factor" in fields) == bool(sizes):
            raise fail(
                "factor",
                "give either factor (new size = old × factor) or the new size "
                f"({', '.join(SIZE_RESOURCE)}), not both and not neither",
            )
        if "factor" in fields:
            values["factor"] = _number(fields["factor"], "factor", fail, positive=True)
            if "resources" not in fields:
                raise fail("resources", "missing (which resources the factor resizes)")
        else:
            values["sizes"] = tuple(
                (SIZE_RESOURCE[c], _number(fields[c], c, fail, positive=True)) for c in sizes
            )
            implied = tuple(r for r, _ in values["sizes"])
            if "resources" in fields and set(values["resources"]) != set(implied):
                raise fail(
                    "resources",
                    f"{list(values['resources'])} does not match the sizes "
                    f"given ({', '.join(sizes)})",
                )
            values["resources"] = implied
    elif kind == "migrate":
        values["from_server"] = _name(fields["from_server"], "from_server", fail)
        values["to_server"] = _name(fields["to_server"], "to_server", fail)
        if values["from_server"] == values["to_server"]:
            raise fail("to_server", "is the from_server itself")
        share = _number(fields["share"], "share", fail)
        if not 0 < share <= 1:
            raise fail("share", f"{share:g}: expected a share of the load above 0 and at most 1")
        values["share"] = share
    elif kind == "retire" and "to_server" in fields:
        values["to_server"] = _name(fields["to_server"], "to_server", fail)
        if values["to_server"] in (values.get("servers") or ()):
            raise fail("to_server", f"{values['to_server']!r} is one of the servers it retires")
    return Change(kind, position, **values)


def _day(value, fail) -> pd.Timestamp:
    if isinstance(value, datetime.datetime):
        value = value.date()
    if isinstance(value, datetime.date):
        return pd.Timestamp(value)
    try:
        return pd.Timestamp(datetime.date.fromisoformat(str(value).strip()))
    except ValueError:
        raise fail("from", f"{value!r}: expected a day as YYYY-MM-DD") from None


def _name(value, field, fail) -> str:
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        return str(value).strip()
    raise fail(field, f"{value!r}: expected a server id")


def _names(value, field, fail) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise fail(field, "empty: list at least one server")
    return tuple(dict.fromkeys(_name(v, field, fail) for v in items))


def _where(value, fail) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, dict) or not value:
        raise fail(
            "where", "expected a mapping of hierarchy column to value, e.g. {application: app-07}"
        )
    out = []
    for column, accepted in value.items():
        items = accepted if isinstance(accepted, list) else [accepted]
        if not items or any(v is None or isinstance(v, (dict, list)) for v in items):
            raise fail("where", f"{column}: expected a value or a list of values")
        out.append((str(column), tuple(str(v).strip() for v in items)))
    return tuple(out)


def _resources(value, fail) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for v in items:
        r = str(v).strip().lower()
        if r not in RESOURCES:
            raise fail("resources", f"{v!r}: expected {', '.join(RESOURCES)}")
        out.append(r)
    if not out:
        raise fail("resources", "empty: list at least one resource")
    return tuple(dict.fromkeys(out))


def _number(value, field, fail, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise fail(field, f"{value!r}: expected a number")
    if positive and value <= 0:
        raise fail(field, f"{value!r}: expected a number above 0")
    return float(value)


def _whole(value, field, fail) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise fail(field, f"{value!r}: expected a whole number of days, 0 or more")
    return int(value)


# --- what needs the data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    """What a scenario is checked against: the servers that can be named, the hierarchy (for
    `where` and sizes) and the forecast's first and last day."""

    servers: frozenset[str]
    hierarchy: pd.DataFrame
    first_day: pd.Timestamp
    last_day: pd.Timestamp

    @classmethod
    def of(cls, golden: pd.DataFrame, hierarchy: pd.DataFrame, servers=()) -> Fleet:
        """The fleet of a golden record (plus ``servers`` known elsewhere, e.g. the hierarchy's)."""
        ds = pd.to_datetime(golden["ds"])
        return cls(
            frozenset(str(s) for s in golden["server_id"].unique())
            | frozenset(str(s) for s in servers),
            hierarchy,
            ds.min().normalize(),
            ds.max().normalize(),
        )


def selected(change: Change, hierarchy: pd.DataFrame, servers) -> list[str]:
    """The servers a change names, among ``servers``: its list, or the hierarchy rows matching every
    `where` column (values compared as text, ignoring surrounding blanks)."""
    known = set(servers)
    if change.servers is not None:
        return [s for s in change.servers if s in known]
    if change.where is None:
        return []
    rows = pd.Series(True, index=hierarchy.index)
    for column, accepted in change.where:
        col = find_column(hierarchy, column)
        rows &= hierarchy[col].astype("string").str.strip().isin(accepted).fillna(False)
    ids = hierarchy.loc[rows, "server_id"].astype(str)
    return [s for s in dict.fromkeys(ids) if s in known]


def check(scenarios, fleet: Fleet) -> None:
    """Refuse what the data contradicts: an unknown server or hierarchy column or value, a day
    outside the forecast, a new size for a server without a known size."""
    for scenario in scenarios:
        for change in scenario.changes:
            _check(scenario, change, fleet)


def _check(scenario: Scenario, change: Change, fleet: Fleet) -> None:
    def fail(field, problem):
        return scenario.error(change, field, problem)

    if not fleet.first_day <= change.start <= fleet.last_day:
        raise fail(
            "from",
            f"{change.start:%Y-%m-%d} is outside the forecast ({fleet.first_day:%Y-%m-%d} to "
            f"{fleet.last_day:%Y-%m-%d})",
        )
    for field in ("from_server", "to_server"):
        name = getattr(change, field)
        if name is not None and name not in fleet.servers:
            raise fail(field, f"unknown server {name!r}")
    if change.servers is not None:
        unknown = [s for s in change.servers if s not in fleet.servers]
        if unknown:
            raise fail(
                "servers",
                f"unknown server {unknown[0]!r}"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""),
            )
    if change.where is not None:
        hier = fleet.hierarchy
        for column, accepted in change.where:
            col = find_column(hier, column)
            if col is None:
                extra = [c for c in hier.columns if c != "server_id"]
                raise fail(
                    "where", f"no hierarchy column {column!r} (it has {', '.join(map(str, extra))})"
                )
            present = set(hier[col].dropna().astype(str).str.strip())
            absent = [v for v in accepted if v not in present]
            if absent:
                raise fail("where", f"no server has {column} = {absent[0]!r}")
    chosen = selected(change, fleet.hierarchy, fleet.servers)
    if change.where is not None and not chosen:
        raise fail("where", "matches no forecast server")
    if change.kind == "retire" and change.to_server in chosen:
        raise fail("to_server", f"{change.to_server!r} is one of the servers it retires")
    if change.sizes:
        from capacity_assets.risk.thresholds import series_sizes

        pairs = pd.DataFrame(
            [(s, r) for s in chosen for r, _ in change.sizes], columns=["server_id", "resource"]
        )
        size, _ = series_sizes(pairs, fleet.hierarchy)
        unsized = pairs[size.isna().to_numpy()]
        if len(unsized):
            s, r = unsized.iloc[0]
            raise fail(
                SIZE_COLUMNS[r],
                f"server {s!r} has no {SIZE_COLUMNS[r]} in the hierarchy, so its utilisation "
                "cannot be rescaled to a new size: give a factor instead",
            )
