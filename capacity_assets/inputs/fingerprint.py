"""What a batch's results depend on, as one hash: its input rows, the hierarchy, the settings, the
what-if scenarios, the package's code and the versions of the libraries that compute them.

``processed_data`` records it for the inputs it actually read, ``batch_ledger`` publishes it with the
batch, and `capacity run` skips a batch whose ledger row has the fingerprint the inputs have now.
The input part is one DuckDB scan of every file, aggregated per server, so adding ten servers
re-runs only the batches those servers hash to.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
from collections import defaultdict
from pathlib import Path

from capacity_assets.inputs import files
from capacity_assets.inputs.batching import batch_keys, batch_of
from capacity_assets.schema import quote_ident

# settings that change results; executor, storage and paths do not (the hierarchy counts by content)
RESULT_SETTINGS = (
    "batches",
    "daily_agg",
    "interval",
    "backtest_months",
    "horizon_days",
    "windows",
    "threshold",
    "risk_days",
    "mape_warn",
    "mape_error_share",
    "seed",
    "engines",
    "threshold_cpu",
    "threshold_memory",
    "threshold_disk",
    "threshold_network",
    "target",
    "target_cpu",
    "target_memory",
    "target_disk",
    "target_network",
    "lead_days",
    "reclaim_below",
    "round_gb",
    "keep_vintages",
    "drift_factor",
)
LIBRARIES = ("prophet", "cmdstanpy", "xgboost", "statsforecast", "duckdb", "pandas", "numpy")


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Versions of what computes the results, the CmdStan that Prophet's model was built with included."""
    out = {name: importlib.metadata.version(name) for name in LIBRARIES}
    try:
        stan = Path(importlib.util.find_spec("prophet").origin).parent / "stan_model"
        out["cmdstan"] = ",".join(sorted(p.name for p in stan.glob("cmdstan-*"))) or "unknown"
    except Exception:  # noqa: BLE001 - a Prophet without a bundled CmdStan
        out["cmdstan"] = "unknown"
    return out


def result_settings(settings) -> dict:
    out = {k: getattr(settings, k) for k in RESULT_SETTINGS}
    months = getattr(settings, "window_months", None)
    if months is not None:  # "3,2", "2, 3" and "3,2,2" are one setting
        out["windows"] = ",".join(map(str, months)) or "none"
    return out


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of the package's Python sources: a code change invalidates every batch."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]  # the capacity_assets package
    for p in sorted(root.rglob("*.py")):
        if "dashboard" not in p.parts:
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def server_digests(conn, sources: list[files.SourceFile]) -> dict[str, tuple[int, int]]:
    """Per server: (row count, order-independent sum of row hashes) over every input file."""
    parts = []
    for f in sources:
        c = {k: quote_ident(v) for k, v in f.columns.items()}
        parts.append(
            f"select cast({c['server_id']} as varchar) as s, "
            f"hash(cast({c['resource']} as varchar), cast({c['timestamp']} as varchar), "
            f"cast({c['utilization_pct']} as varchar), {f.scale}) as h "
            f"from {files._relation_sql(f.kind)}"
        )
    sql = " union all ".join(parts)
    rows = conn.execute(
        f"select s, count(*), sum(h::hugeint) % 18446744073709551557 from ({sql}) "
        f"where nullif(trim(s), '') is not null group by s",
        [f.path for f in sources],
    ).fetchall()
    return {s: (int(n), int(h)) for s, n, h in rows}


def hierarchy_digest(path: str) -> str:
    """Content of every hierarchy file a path, folder or glob names (as the hierarchy asset reads them)."""
    if not path:
        return ""
    h = hashlib.sha256()
    for p in files.resolve(path, "CAPACITY_HIERARCHY"):
        h.update(Path(p).name.encode())
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def scenarios_digest(path: str) -> str:
    """Content of the what-if file (CAPACITY_SCENARIOS): a batch's scenario tables follow from it,
    so an edited file re-runs the batches (`capacity whatif` answers from the published record
    in seconds without a run)."""
    if not path or not Path(path).is_file():
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def batch_fingerprints(
    conn,
    sources,
    settings,
    versions: dict | None = None,
    code: str | None = None,
    digests: dict | None = None,
) -> dict[str, str]:
    """batch key -> fingerprint, for every batch (an empty batch has one too). ``digests``: the
    ``server_digests`` of the same sources, when the caller has them already."""
    per_batch = defaultdict(list)
    for server, digest in (server_digests(conn, sources) if digests is None else digests).items():
        per_batch[batch_of(server, settings.batches)].append((server, digest))
    common = repr(
        (
            sorted(result_settings(settings).items()),
            hierarchy_digest(settings.hierarchy_path),
            scenarios_digest(getattr(settings, "scenarios", "")),
            code or code_version(),
            sorted((versions or library_versions()).items()),
        )
    )
    out = {}
    for key in batch_keys(settings.batches):
        h = hashlib.sha256(common.encode())
        h.update(repr(sorted(per_batch.get(key, []))).encode())
        out[key] = h.hexdigest()[:20]
    return out
