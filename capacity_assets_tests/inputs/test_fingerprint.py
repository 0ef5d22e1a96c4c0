"""The fingerprint covers everything that changes results: inputs, the hierarchy however it is given,
the settings, the code and the library versions."""

import dataclasses

import duckdb
import pandas as pd

from capacity_assets.config import CapacitySettings
from capacity_assets.inputs import files, fingerprint


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["server_id", "resource", "timestamp", "utilization_pct"]).to_csv(
        path, index=False
    )


def fps(settings, **kw):
    conn = duckdb.connect()
    return fingerprint.batch_fingerprints(
        conn, files.inspect_metrics(conn, settings.metrics), settings, **kw
    )


def hierarchy(path, owner):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"server_id": ["a"], "department": ["D"], "app_manager": [owner]}).to_csv(
        path, index=False
    )


def test_hierarchy_given_as_folder_or_glob_counts_by_content(tmp_path):
    write(tmp_path / "m" / "m.csv", [("a", "cpu", "2025-01-01", 5)])
    hierarchy(tmp_path / "h" / "part1.csv", "Ann")
    for given in (str(tmp_path / "h"), str(tmp_path / "h" / "*.csv")):
        s = CapacitySettings(metrics=str(tmp_path / "m"), hierarchy=given, batches=2)
        before = fps(s)
        hierarchy(tmp_path / "h" / "part1.csv", "Bob")
        after = fps(s)
        assert before != after, given
        hierarchy(tmp_path / "h" / "part1.csv", "Ann")


def test_settings_code_and_library_versions_change_the_fingerprint(tmp_path):
    write(tmp_path / "m.csv", [("a", "cpu", "2025-01-01", 5), ("b", "cpu", "2025-01-01", 6)])
    s = CapacitySettings(metrics=str(tmp_path / "m.csv"), batches=2)
    base = fps(s)
    assert fps(dataclasses.replace(s, threshold=90.0)) != base
    assert fps(dataclasses.replace(s, db="elsewhere.duckdb")) == base  # a path changes no result
    newer = {**fingerprint.library_versions(), "prophet": "9.9.9"}
    assert fps(s, versions=newer) != base
    assert fps(s, code="another-code-version") != base
    assert set(fingerprint.library_versions()) >= {
        "prophet",
        "cmdstan",
        "xgboost",
        "duckdb",
        "pandas",
    }


def test_input_rows_change_only_their_batch(tmp_path):
    write(tmp_path / "m.csv", [("a", "cpu", "2025-01-01", 5), ("b", "cpu", "2025-01-01", 6)])
    s = CapacitySettings(metrics=str(tmp_path / "m.csv"), batches=20)
    base = fps(s)
    write(tmp_path / "m.csv", [("a", "cpu", "2025-01-01", 5), ("b", "cpu", "2025-01-01", 7)])
    changed = {k for k, v in fps(s).items() if base[k] != v}
    from capacity_assets.inputs.batching import batch_of

    assert changed == {batch_of("b", 20)}


def test_an_edited_scenarios_file_reruns_the_batches_and_a_moved_one_does_not(tmp_path):
    write(tmp_path / "m" / "m.csv", [("a", "cpu", "2025-01-01", 5)])
    plan = (
        "onboard:\n  - add_load: {servers: [a], resources: [cpu], from: 2025-02-01, points: 10}\n"
    )
    (tmp_path / "s1.yaml").write_text(plan)
    (tmp_path / "s2.yaml").write_text(plan)
    base = CapacitySettings(metrics=str(tmp_path / "m"), batches=2)
    one = fps(dataclasses.replace(base, scenarios=str(tmp_path / "s1.yaml")))
    assert fps(dataclasses.replace(base, scenarios=str(tmp_path / "s2.yaml"))) == one
    assert fps(base) != one
    (tmp_path / "s1.yaml").write_text(plan.replace("points: 10", "points: 20"))
    assert fps(dataclasses.replace(base, scenarios=str(tmp_path / "s1.yaml"))) != one
