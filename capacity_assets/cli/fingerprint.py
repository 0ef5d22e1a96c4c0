"""What a batch's results depend on, as one hash: its input rows, the settings and the code.

`capacity run` compares it with the fingerprint of the batch's last successful run (a run tag in
the Dagster instance) and skips batches whose inputs, settings and code are all unchanged. The input
part is one DuckDB scan of every file, aggregated per server, so adding ten servers re-runs only
the batches those servers hash to.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from capacity_assets.inputs import files
from capacity_assets.inputs.batching import batch_keys, batch_of
from capacity_assets.schema import quote_ident

TAG = "capacity/input_fingerprint"
# settings that change results; executor, storage and paths do not
RESULT_SETTINGS = ("batches", "daily_agg", "interval", "backtest_months", "horizon_days", "threshold",
                   "risk_days", "mape_warn", "mape_error_share", "seed")  # hierarchy: by content


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
        parts.append(f"select cast({c['server_id']} as varchar) as s, "
                     f"hash(cast({c['resource']} as varchar), cast({c['timestamp']} as varchar), "
                     f"cast({c['utilization_pct']} as varchar), {f.scale}) as h "
                     f"from {files._relation_sql(f.kind)}")
    sql = " union all ".join(parts)
    rows = conn.execute(f"select s, count(*), sum(h::hugeint) % 18446744073709551557 from ({sql}) "
                        f"where nullif(trim(s), '') is not null group by s",
                        [f.path for f in sources]).fetchall()
    return {s: (int(n), int(h)) for s, n, h in rows}


def hierarchy_digest(path: str) -> str:
    if not path or not Path(path).exists():
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def batch_fingerprints(conn, sources, settings) -> dict[str, str]:
    """batch key -> fingerprint, for every batch (an empty batch has one too)."""
    per_batch: dict[str, list] = defaultdict(list)
    for server, digest in server_digests(conn, sources).items():
        per_batch[batch_of(server, settings.batches)].append((server, digest))
    common = repr(([(k, getattr(settings, k)) for k in RESULT_SETTINGS],
                   hierarchy_digest(settings.hierarchy_path), code_version()))
    out = {}
    for key in batch_keys(settings.batches):
        h = hashlib.sha256(common.encode())
        h.update(repr(sorted(per_batch.get(key, []))).encode())
        out[key] = h.hexdigest()[:20]
    return out
