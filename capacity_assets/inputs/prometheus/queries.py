"""What to ask the server: the PromQL query file, and the daily query built from each expression.

The query file is the one thing an operator edits to point the pipeline at their metrics, so it is
read strictly: every mistake names the file and the key instead of surfacing later as odd data.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from capacity_assets.inputs.files import InputError
from capacity_assets.schema import RESOURCES

DEFAULT_QUERIES = Path(__file__).parents[1] / "promql" / "node_exporter.yaml"
AGGS = {
    "mean": "avg_over_time({})",
    "max": "max_over_time({})",
    "p95": "quantile_over_time(0.95, {})",
}
DAY_S = 86400
# inner step of the subquery that turns an arbitrary expression into a range: recording rules run
# every 1 m and scrapes every 15–60 s, so 5 m sees a fresh sample at every point and stays within
# Prometheus' default 5 m lookback
RESOLUTION, RESOLUTION_S = "5m", 300
_STRING = r'"(?:[^"\\]|\\.)*"'
# a bare selector (metric name with optional matchers): it can take a range directly, which reads
# every raw sample; anything else needs a subquery
_SELECTOR = re.compile(
    rf"^\s*(?:[A-Za-z_:][A-Za-z0-9_:]*\s*(?:\{{(?:[^{{}}\"]|{_STRING})*\}})?"
    rf"|\{{(?:[^{{}}\"]|{_STRING})*\}})\s*$"
)


class QueryFileError(InputError):
    """The PromQL file (CAPACITY_PROMQL) cannot be used; the message names the file and the key."""


class Queries(dict):
    """resource -> PromQL expression, plus the scale each entry declared (1, 100, or None = detect)."""

    def __init__(self, exprs=(), scales: dict | None = None, source: str | None = None):
        super().__init__(exprs)
        self.scales: dict[str, float | None] = dict(scales or {})
        self.source = source


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last, silently:
    a query file edited by appending a second `cpu:` would run a query nobody reviewed)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"{key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_queries(path: str | None) -> Queries:
    """resource -> PromQL from a YAML file (CAPACITY_PROMQL); ``None`` reads the shipped node_exporter file.

    An entry is either the expression itself or a mapping with ``expr`` and an optional ``scale``
    (1: the values are percent, 100: ratios 0–1). The format is documented in the shipped file.
    """
    p = Path(path) if path else DEFAULT_QUERIES
    if not p.exists():
        raise QueryFileError(f"{p}: PromQL query file does not exist (CAPACITY_PROMQL)")
    if not p.is_file():
        raise QueryFileError(f"{p}: is a folder, not a PromQL query file (CAPACITY_PROMQL)")
    try:
        doc = yaml.load(p.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except UnicodeDecodeError:
        raise QueryFileError(
            f"{p}: not a text file (CAPACITY_PROMQL must be a YAML file)"
        ) from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise QueryFileError(f"{p}: not valid YAML{at}: {problem}") from None
    if doc is None or doc == {}:
        raise QueryFileError(
            f"{p}: the query file is empty; give one PromQL expression per resource "
            f"({', '.join(RESOURCES)})"
        )
    if not isinstance(doc, dict):
        raise QueryFileError(
            f"{p}: expected a mapping of resource to PromQL expression "
            f"(e.g. `cpu: 'instance:node_cpu_utilisation:rate5m'`), found a YAML {type(doc).__name__}"
        )
    exprs, scales = {}, {}
    for key, value in doc.items():
        name = str(key).strip().lower()
        if name not in RESOURCES:
            raise QueryFileError(
                f"{p}: unknown resource {key!r}; the resources are {', '.join(RESOURCES)}"
            )
        if name in exprs:
            raise QueryFileError(f"{p}: resource {name!r} is given twice")
        scale = None
        if isinstance(value, dict):
            unknown = [str(k) for k in value if k not in ("expr", "scale")]
            if unknown:
                raise QueryFileError(
                    f"{p}: {key}: unknown setting {unknown[0]!r}; the settings are expr and scale"
                )
            if "scale" in value:
                scale = value["scale"]
                if (
                    isinstance(scale, bool)
                    or not isinstance(scale, (int, float))
                    or scale not in (1, 100)
                ):
                    raise QueryFileError(
                        f"{p}: {key}: scale must be 1 (values are percent) or 100 (values are "
                        f"ratios 0–1), not {scale!r}"
                    )
                scale = float(scale)
            value = value.get("expr")
            if value is None:
                raise QueryFileError(f"{p}: {key}: missing expr (the PromQL expression)")
        if not isinstance(value, str):
            raise QueryFileError(
                f"{p}: {key}: expected a PromQL expression as text, or a mapping with expr and "
                f"scale, not {type(value).__name__} {value!r}"
            )
        if not value.strip():
            raise QueryFileError(f"{p}: {key}: the PromQL expression is empty")
        exprs[name], scales[name] = value.strip(), scale
    ordered = [r for r in RESOURCES if r in exprs]
    return Queries({r: exprs[r] for r in ordered}, {r: scales[r] for r in ordered}, source=str(p))


def daily_query(expr: str, agg: str = "mean") -> str:
    """The PromQL whose value at D 00:00 UTC is the aggregate of day D−1 (the window (D−1 00:00, D 00:00]).

    A plain selector takes ``[1d]`` directly, so every raw sample counts; any other expression has
    to become a subquery, sampled every 5 minutes. Newlines around the expression keep a trailing
    ``# comment`` in it from swallowing the closing parenthesis.
    """
    if agg not in AGGS:
        raise ValueError(f"daily aggregation {agg!r} is not one of {', '.join(AGGS)}")
    expr = expr.strip()
    if _SELECTOR.match(expr):
        return AGGS[agg].format(f"{expr}[1d]")
    return AGGS[agg].format(f"(\n{expr}\n)[1d:{RESOLUTION}]")


def _points_per_day(expr: str) -> int:
    return 1 if _SELECTOR.match(expr.strip()) else DAY_S // RESOLUTION_S
