"""Department risk reports: one CSV per department (what each owner gets) plus risk_all.csv.

Rewriting a report must never leave a half-written or out-of-date file behind: every file is written
to a temporary name and renamed into place, and department files of the previous report that are
no longer needed (a department without risk any more) are removed. Only files this module wrote,
as listed in its manifest, are ever removed; anything else in the folder is left alone.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pandas as pd

from capacity_assets.risk.breaches import sort_risk

PREFIX = "risk_"
ALL_FILE = f"{PREFIX}all.csv"
MANIFEST = ".risk_report_manifest"


def safe_name(department: str) -> str:
    """'Payments & Billing' -> 'payments_billing'; never empty."""
    slug = re.sub(r"[^a-z0-9]+", "_", str(department).strip().lower()).strip("_")
    return slug or "unnamed"


def department_files(departments) -> dict[str, str]:
    """Department -> file name, unique even when two names slugify alike or one is called 'all'."""
    taken, out = {ALL_FILE}, {}
    for dep in sorted(set(departments), key=str):
        base, n = f"{PREFIX}{safe_name(dep)}", 1
        name = f"{base}.csv"
        while name in taken:
            n += 1
            name = f"{base}_{n}.csv"
        taken.add(name)
        out[dep] = name
    return out


def _write_atomic(text: str, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, date_format="%Y-%m-%d", float_format="%.2f")


def write_department_reports(risk: pd.DataFrame, out_dir) -> list[Path]:
    """Write the reports; returns the paths written (risk_all.csv first, then departments by name)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    risk = sort_risk(risk) if len(risk) else risk
    names = department_files(risk["department"].dropna()) if len(risk) else {}
    written = [out_dir / ALL_FILE]
    _write_atomic(_csv(risk), written[0])
    for dep, name in names.items():
        path = out_dir / name
        _write_atomic(_csv(risk[risk["department"] == dep]), path)
        written.append(path)
    manifest = out_dir / MANIFEST
    previous = manifest.read_text(encoding="utf-8").split() if manifest.exists() else []
    keep = {p.name for p in written}
    for stale in previous:
        # only plain file names of our own pattern: a tampered manifest can't reach elsewhere
        if stale not in keep and stale == Path(stale).name and stale.startswith(PREFIX) and stale.endswith(".csv"):
            (out_dir / stale).unlink(missing_ok=True)
    _write_atomic("\n".join(sorted(keep)) + "\n", manifest)
    return written
