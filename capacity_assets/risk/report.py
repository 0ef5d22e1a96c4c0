"""Department reports: one CSV per department (what each owner gets) plus an ``_all`` file, for the
risk list (``risk_*.csv``) and the capacity plan (``plan_*.csv``).

Rewriting a report must never leave a half-written or out-of-date file behind: every file is written
to a temporary name and renamed into place, and department files of the previous report that are
no longer needed (a department without risk any more) are removed. Only files this module wrote,
as listed in its manifest, are ever removed; anything else in the folder is left alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from capacity_assets.atomic import write_atomic
from capacity_assets.risk.breaches import sort_risk

PREFIX = "risk_"
ALL_FILE = f"{PREFIX}all.csv"
PLAN_PREFIX = "plan_"


def safe_name(department: str) -> str:
    """'Payments & Billing' -> 'payments_billing'; never empty."""
    slug = re.sub(r"[^a-z0-9]+", "_", str(department).strip().lower()).strip("_")
    return slug or "unnamed"


def department_files(departments, prefix: str = PREFIX) -> dict[str, str]:
    """Department -> file name, unique even when two names slugify alike or one is called 'all'."""
    taken, out = {f"{prefix}all.csv"}, {}
    for dep in sorted(set(departments), key=str):
        base, n = f"{prefix}{safe_name(dep)}", 1
        name = f"{base}.csv"
        while name in taken:
            n += 1
            name = f"{base}_{n}.csv"
        taken.add(name)
        out[dep] = name
    return out


def _write_atomic(text: str, path: Path) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline=""))


def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, date_format="%Y-%m-%d", float_format="%.2f")


def write_department_reports(risk: pd.DataFrame, out_dir, prefix: str = PREFIX) -> list[Path]:
    """Write the reports; returns the paths written (<prefix>all.csv first, then departments by name).
    The risk list is sorted most urgent first; any other table (the plan) keeps its own order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if prefix == PREFIX and len(risk):
        risk = sort_risk(risk)
    names = department_files(risk["department"].dropna(), prefix) if len(risk) else {}
    written = [out_dir / f"{prefix}all.csv"]
    _write_atomic(_csv(risk), written[0])
    for dep, name in names.items():
        path = out_dir / name
        _write_atomic(_csv(risk[risk["department"] == dep]), path)
        written.append(path)
    manifest = out_dir / f".{prefix}report_manifest"
    previous = manifest.read_text(encoding="utf-8").split() if manifest.exists() else []
    keep = {p.name for p in written}
    for stale in previous:
        # only plain file names of our own pattern: a tampered manifest can't reach elsewhere
        if (
            stale not in keep
            and stale == Path(stale).name
            and stale.startswith(prefix)
            and stale.endswith(".csv")
        ):
            (out_dir / stale).unlink(missing_ok=True)
    _write_atomic("\n".join(sorted(keep)) + "\n", manifest)
    return written
