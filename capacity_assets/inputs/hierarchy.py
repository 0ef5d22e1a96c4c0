"""Who owns each server: the hierarchy file normalised (department, app manager, extra columns)."""

from __future__ import annotations

import pandas as pd

from capacity_assets.inputs import files
from capacity_assets.schema import DATE_COLUMNS, FORECASTS, RISK_EXCEPTIONS, RISK_LIFECYCLE

UNASSIGNED = "Unassigned"
HIERARCHY_REQUIRED = ["server_id", "department", "app_manager"]
# names an extra hierarchy column may not take, in any case (DuckDB's names are case-insensitive):
# every pipeline column, the exceptions' lifecycle (status, first_flagged) and every date column
RESERVED_COLUMNS = {
    *FORECASTS,
    *RISK_EXCEPTIONS,
    *RISK_LIFECYCLE,
    *DATE_COLUMNS,
    "y",
    "split",
    "filled",
}


def hierarchy_table(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Normalised hierarchy (server_id, department, app_manager, then extra columns as given) and
    human-readable issues. Header names are matched ignoring case and surrounding blanks, because
    the file comes from a spreadsheet export. Conflicting duplicate server_ids keep the first row:
    the file order is the owner's, and a stable rule beats a guess."""
    rename = {
        c: str(c).strip().lower()
        for c in df.columns
        if str(c).strip().lower() in HIERARCHY_REQUIRED
    }
    rename.update({c: str(c).strip() for c in df.columns if c not in rename})
    df = df.rename(columns=rename)
    missing = [c for c in HIERARCHY_REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(
            f"hierarchy is missing required columns {missing}; found {list(df.columns)}"
        )
    extra = [c for c in df.columns if c not in HIERARCHY_REQUIRED]
    out = df[HIERARCHY_REQUIRED + extra].copy()
    # an extra column named like a pipeline column (a CMDB's hardware 'model', a 'resource' tag)
    # would collide in risk_exceptions: keep it, under a prefixed name
    clash = {c: f"hierarchy_{c}" for c in extra if c.lower() in RESERVED_COLUMNS}
    out = out.rename(columns=clash)
    for c in HIERARCHY_REQUIRED:
        s = out[c].astype("string").str.strip()
        out[c] = s.mask(s.isna() | s.eq(""), UNASSIGNED if c != "server_id" else pd.NA)
    issues: list[str] = [
        f"hierarchy column {c!r} is named like a pipeline column: kept as {n!r}"
        for c, n in clash.items()
    ]
    no_id = out["server_id"].isna()
    if no_id.any():
        issues.append(f"{int(no_id.sum())} hierarchy rows without server_id dropped")
    out = out[~no_id].drop_duplicates()
    dup = out[out["server_id"].duplicated(keep=False)]
    if len(dup):
        servers = list(dict.fromkeys(dup["server_id"]))
        first = dup[dup["server_id"] == servers[0]]
        cols = [
            c
            for c in out.columns
            if c != "server_id" and first[c].astype("string").nunique(dropna=False) > 1
        ]
        vals = "; ".join(
            f"{c}: " + " vs ".join(map(repr, first[c].astype(str).tolist())) for c in cols
        )
        issues.append(
            f"{len(servers)} server_id(s) with conflicting hierarchy rows, kept the first of each; "
            f"first: {servers[0]!r} ({vals})"
        )
    out = out.drop_duplicates("server_id", keep="first").reset_index(drop=True)
    return out, issues


def read_hierarchy(conn, path: str) -> tuple[pd.DataFrame, list[str]]:
    """The hierarchy file(s) at ``path``, normalised. A file in which no row names a server (a
    truncated export) is refused: stored, it would take every server's owner away."""
    table, problems = hierarchy_table(
        files.read_table(conn, path, files.HIERARCHY_COLUMNS, "CAPACITY_HIERARCHY")
    )
    if table.empty:
        raise files.InputError(
            f"CAPACITY_HIERARCHY {path}: no row has a server_id (only a header, or server_id empty "
            f"in every row); storing it would leave every server Unassigned, so nothing was run"
        )
    return table, problems
