"""What if end to end: a real `capacity run` on a tiny fleet with CAPACITY_SCENARIOS set writes the
scenario tables, and `capacity whatif FILE --json` on its database says what each scenario changes,
in agreement with those tables; a scenario without changes gives the baseline exactly."""

import json

import pandas as pd
import pytest

from capacity_assets.inputs.batching import batch_of
from capacity_assets.schema import CAPACITY_PLAN, FORECASTS, RISK_EXCEPTIONS
from capacity_assets_tests.conftest import capacity

BATCHES = 2
END = pd.Timestamp("2026-06-30")  # last history day: the forecast starts on 2026-07-01
FIRST = END + pd.Timedelta(days=1)
SOURCE, TARGET = "app-prd-00003", "web-stg-00002"  # a migration across the two batches
DISK_GB = {SOURCE: 500, TARGET: 2000}
KEY = ["server_id", "resource"]


def sql(db, statement, params=None) -> pd.DataFrame:
    from capacity_assets.store.queries import query

    return query(db, statement, params or [])


def day(offset: int) -> str:
    return f"{FIRST + pd.Timedelta(days=offset):%Y-%m-%d}"


SCENARIOS = f"""\
move-disk:
  - migrate: {{from_server: {SOURCE}, to_server: {TARGET}, resources: [disk], from: {day(10)},
              share: 0.5}}
  - resize: {{servers: [{TARGET}], resources: [cpu], from: {day(20)}, factor: 2}}
  - add_load: {{servers: [web-prd-00000], resources: [memory], from: {day(30)}, points: 40}}
zero:
  - add_load: {{where: {{environment: [prod, dev, staging]}}, resources: [cpu, memory, disk, network],
               from: {day(0)}, points: 0}}
unchanged: []
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict:
    from capacity_assets.demo.fleet import write_fleet

    assert batch_of(SOURCE, BATCHES) != batch_of(TARGET, BATCHES)
    work = tmp_path_factory.mktemp("whatif_e2e")
    fleet = write_fleet(work / "fleet", servers=6, months=12, seed=0, end=END)
    hier = pd.read_csv(fleet["hierarchy"], dtype=str)
    hier["cpu_cores"] = 8
    hier["memory_gb"] = 64
    hier["disk_gb"] = [DISK_GB.get(s, 1000) for s in hier["server_id"]]
    hier.to_csv(fleet["hierarchy"], index=False)
    scenarios = work / "scenarios.yaml"
    scenarios.write_text(SCENARIOS, encoding="utf-8")
    env = {
        "CAPACITY_METRICS": fleet["metrics"],
        "CAPACITY_HIERARCHY": fleet["hierarchy"],
        "CAPACITY_DB": str(work / "cap.duckdb"),
        "CAPACITY_BATCHES": str(BATCHES),
        "CAPACITY_ENGINES": "challenger",  # the scenarios do not care which model forecast
        "CAPACITY_THRESHOLD": "80",  # low enough for the tiny fleet to have exceptions
        "CAPACITY_SCENARIOS": str(scenarios),
        "DAGSTER_HOME": str(work / ".dagster"),
    }
    capacity("run", cwd=work, env=env)
    db = env["CAPACITY_DB"]
    return {"work": work, "env": env, "db": db, "scenarios": scenarios}


def whatif(ran, *args, check=True):
    return capacity("whatif", *args, cwd=ran["work"], env=ran["env"], check=check)


def stored(db, table, scenario):
    frame = sql(db, f"select * from {table} where scenario = ?", [scenario])
    return frame.drop(columns="scenario").sort_values(KEY).reset_index(drop=True)


def test_a_scenario_without_changes_stores_the_baseline_exactly(ran):
    db = ran["db"]
    forecasts = sql(db, "select * from forecasts").sort_values(KEY + ["ds"]).reset_index(drop=True)
    risk = sql(db, "select * from risk_exceptions")[list(RISK_EXCEPTIONS)]
    risk = risk.sort_values(KEY).reset_index(drop=True)
    plan = sql(db, "select * from capacity_plan").sort_values(KEY).reset_index(drop=True)
    assert len(risk) and set(plan["action"]) >= {"add"}, "the tiny fleet has something to judge"
    for name in ("unchanged", "zero"):  # no changes; changes of zero to every series
        got = stored(db, "scenario_forecasts", name).sort_values(KEY + ["ds"])
        pd.testing.assert_frame_equal(
            got[list(FORECASTS)].reset_index(drop=True), forecasts[list(FORECASTS)]
        )
        got_risk = stored(db, "scenario_risk", name)
        pd.testing.assert_frame_equal(got_risk[list(RISK_EXCEPTIONS)], risk)
        assert (got_risk["days_moved"] == 0).all()
        assert (got_risk["baseline_first_breach_date"] == risk["first_breach_date"]).all()
        pd.testing.assert_frame_equal(stored(db, "scenario_plan", name)[list(CAPACITY_PLAN)], plan)


def test_a_migration_across_batches_conserves_the_disk_in_gb(ran):
    db = ran["db"]
    moved = stored(ran["db"], "scenario_forecasts", "move-disk")
    base = sql(db, "select * from forecasts")

    def gb(frame, when):
        rows = frame[(frame["resource"] == "disk") & (frame["ds"] == pd.Timestamp(when))]
        rows = rows.set_index("server_id")["demand"]
        return {s: rows[s] / 100 * DISK_GB[s] for s in (SOURCE, TARGET)}

    before, after = gb(base, day(30)), gb(moved, day(30))
    assert after[SOURCE] == pytest.approx(before[SOURCE] / 2)
    assert after[TARGET] == pytest.approx(before[TARGET] + before[SOURCE] / 2)
    assert gb(moved, day(9)) == pytest.approx(gb(base, day(9)))  # the day before: as it was
    # the resize of the target's cpu by 2 halves its utilisation from its day on
    cpu = base[(base.server_id == TARGET) & (base.resource == "cpu")].set_index("ds")["demand"]
    now = moved[(moved.server_id == TARGET) & (moved.resource == "cpu")].set_index("ds")["demand"]
    assert now[pd.Timestamp(day(20))] == pytest.approx(cpu[pd.Timestamp(day(20))] / 2)
    assert now[pd.Timestamp(day(19))] == cpu[pd.Timestamp(day(19))]


def test_whatif_json_agrees_with_the_scenario_tables(ran):
    out = json.loads(whatif(ran, str(ran["scenarios"]), "--json").stdout)
    assert [o["scenario"] for o in out] == ["move-disk", "zero", "unchanged"]
    for o in out[1:]:
        assert o == {"scenario": o["scenario"], "new": [], "cleared": [], "moved": [], "plan": []}
    move = out[0]
    assert set(move) == {"scenario", "new", "cleared", "moved", "plan"}
    db = ran["db"]
    risk = stored(db, "scenario_risk", "move-disk")
    base = sql(db, "select server_id, resource, first_breach_date from risk_exceptions")
    new = risk[risk["baseline_first_breach_date"].isna()]
    assert sorted((d["server_id"], d["resource"]) for d in move["new"]) == sorted(
        zip(new["server_id"], new["resource"])
    )
    shifted = risk[risk["days_moved"].fillna(0) != 0]
    assert sorted((d["server_id"], d["resource"], d["days"]) for d in move["moved"]) == sorted(
        zip(shifted["server_id"], shifted["resource"], shifted["days_moved"].astype(int))
    )
    gone = base.merge(risk[KEY], on=KEY, how="left", indicator=True)
    gone = gone[gone["_merge"] == "left_only"]
    assert sorted((d["server_id"], d["resource"]) for d in move["cleared"]) == sorted(
        zip(gone["server_id"], gone["resource"])
    )
    assert ("web-prd-00000", "memory") in {(d["server_id"], d["resource"]) for d in move["new"]}
    for entry in move["plan"]:
        assert set(entry) == {"department", "resource", "action", "change_units", "unit"}
    # the plan's totals in units per department, recomputed from the tables
    plan = stored(db, "scenario_plan", "move-disk")
    baseline = sql(db, "select * from capacity_plan")

    def units(frame):
        rows = frame[frame["action"] == "add"]
        return rows.groupby(["department", "resource"])["change_units"].sum()

    delta = units(plan).sub(units(baseline), fill_value=0)
    expected = {k: v for k, v in delta.items() if round(v, 6) != 0}
    got = {
        (d["department"], d["resource"]): d["change_units"]
        for d in move["plan"]
        if d["action"] == "add"
    }
    assert got == pytest.approx(expected)


def test_whatif_prints_the_changes_and_answers_one_scenario(ran):
    proc = whatif(ran, str(ran["scenarios"]), "--scenario", "unchanged")
    assert proc.stdout.strip() == "scenario unchanged:\n  no change against the baseline"
    proc = whatif(ran, str(ran["scenarios"]), "--scenario", "move-disk")
    assert proc.stdout.startswith("scenario move-disk:\n")
    one = json.loads(whatif(ran, str(ran["scenarios"]), "--scenario", "zero", "--json").stdout)
    assert one["scenario"] == "zero"  # one scenario: one object, not a list
    bad = whatif(ran, str(ran["scenarios"]), "--scenario", "nope", check=False)
    assert bad.returncode == 2 and "has no scenario 'nope'" in bad.stderr


def test_a_bad_file_is_refused_before_anything_runs(ran, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"typo:\n  - add_load: {{servers: [srv-nope], resources: [cpu], from: {day(5)}, "
        "points: 5}\n",
        encoding="utf-8",
    )
    proc = whatif(ran, str(bad), check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "scenario 'typo', change 1 (add_load), field 'servers': unknown server 'srv-nope'" in (
        proc.stderr
    )
    bad.write_text("typo:\n  - migrate: {from_server: a, to_server: b, share: 2}\n")
    env = {**ran["env"], "CAPACITY_SCENARIOS": str(bad)}
    proc = capacity("run", cwd=ran["work"], env=env, check=False, timeout=120)
    assert proc.returncode == 2, proc.stdout
    assert "CAPACITY_SCENARIOS" in proc.stderr and "change 1 (migrate)" in proc.stderr
    assert "batch_" not in proc.stdout  # nothing ran


def test_whatif_judges_the_file_it_is_given_not_the_environments(ran, tmp_path):
    """A broken CAPACITY_SCENARIOS in the environment (or .env) does not stop `capacity whatif`
    on another, good file."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("typo:\n  - migrate: {from_server: a, to_server: b, share: 2}\n")
    env = {**ran["env"], "CAPACITY_SCENARIOS": str(broken)}
    proc = capacity(
        "whatif", str(ran["scenarios"]), "--scenario", "unchanged", cwd=ran["work"], env=env
    )
    assert "no change against the baseline" in proc.stdout


def test_an_empty_store_is_said_so_instead_of_passing_an_unchecked_file(ran, tmp_path):
    import shutil

    from capacity_assets.store.queries import query

    db = tmp_path / "empty.duckdb"
    shutil.copy(ran["db"], db)
    import duckdb

    with duckdb.connect(str(db)) as conn:
        conn.execute("delete from forecasts")
    assert query(str(db), "select count(*) as n from forecasts")["n"][0] == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"typo:\n  - add_load: {{servers: [srv-nope], resources: [cpu], from: {day(5)}, points: 5}}\n"
    )
    proc = capacity(
        "whatif", str(bad), "--db", str(db), cwd=ran["work"], env=ran["env"], check=False
    )
    assert proc.returncode == 2 and "has no published forecasts yet" in proc.stderr
