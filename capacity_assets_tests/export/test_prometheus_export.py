"""The forecasts in Prometheus: the file a run writes to CAPACITY_PROM_TEXTFILE, `capacity export
prometheus`, the alerting rules and the Grafana dashboard, checked with Prometheus' own promtool
on a real run of the tiny fleet."""

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from capacity_assets.export.prometheus import exposition
from capacity_assets.export.textfile import refresh, write_forecasts
from capacity_assets_tests.conftest import TINY_SATURATING, capacity

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "capacity-rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "capacity.json"
PROMTOOL_HINT = "apt-get install -y prometheus (Debian/Ubuntu ship promtool with it)"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def promtool(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip(f"promtool is not installed: {PROMTOOL_HINT}")
    return subprocess.run(
        [exe, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(metric, labels): value} of an exposition, label values unescaped."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name, labels, value = SAMPLE.match(line).groups()
        pairs = {
            k: re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], v)
            for k, v in LABEL.findall(labels)
        }
        key = (name, frozenset(pairs.items()))
        assert key not in out, f"series listed twice: {line}"
        out[key] = float(value)
    return out


def one(found: dict, metric: str, **labels) -> float:
    hits = [v for (m, ls), v in found.items() if m == metric and set(labels.items()) <= ls]
    assert len(hits) == 1, (metric, labels, hits)
    return hits[0]


def unix(day) -> float:
    return (pd.Timestamp(day).tz_localize("UTC") - pd.Timestamp(0, tz="UTC")).total_seconds()


@pytest.fixture(scope="module")
def prom_run(tmp_path_factory, tiny_fleet) -> dict:
    """`capacity run` on the tiny fleet with CAPACITY_PROM_TEXTFILE set, into a folder of its own."""
    work = tmp_path_factory.mktemp("prom")
    textfile = work / "textfile" / "capacity.prom"
    env = {
        "CAPACITY_METRICS": tiny_fleet["metrics"],
        "CAPACITY_HIERARCHY": tiny_fleet["hierarchy"],
        "CAPACITY_DB": str(work / "cap.duckdb"),
        "DAGSTER_HOME": str(work / ".dagster"),
        "CAPACITY_PROM_TEXTFILE": str(textfile),
    }
    capacity("run", cwd=work, env=env)
    return {"work": work, "env": env, "db": env["CAPACITY_DB"], "textfile": textfile}


def test_a_run_writes_every_series_and_the_export_command_writes_the_same_file(prom_run):
    from capacity_assets.store.queries import query

    text = prom_run["textfile"].read_text()
    found = samples(text)
    series = query(prom_run["db"], "select distinct server_id, resource from forecasts")
    expected = {
        (s, r, h) for s, r in series.itertuples(index=False) for h in ("30d", "90d", "180d")
    }
    upper = {
        (d["instance"], d["resource"], d["horizon"])
        for (m, ls), _ in found.items()
        if m == "capacity_forecast_upper_ratio"
        for d in [dict(ls)]
    }
    assert len(series) == 20 and upper == expected
    # nothing half-written or left behind next to it for the textfile collector to trip on
    assert sorted(p.name for p in prom_run["textfile"].parent.iterdir()) == [
        ".capacity.prom.lock",
        "capacity.prom",
    ]

    out = prom_run["work"] / "exported.prom"
    proc = capacity(
        "export", "prometheus", "--out", str(out), cwd=prom_run["work"], env=prom_run["env"]
    )
    assert out.read_text() == text
    assert f"wrote 20 series (1 at risk) of 3 batches to {out}" in proc.stdout


def lint_findings(text: str) -> list[str]:
    """promtool's findings on ``text``, the contract's ``capacity_days_to_breach`` unit note left
    out (the issue names it so; promtool prefers base units); a parse error fails here."""
    checked = promtool("check", "metrics", stdin=text)
    lines = (checked.stdout + checked.stderr).strip().splitlines()
    assert checked.returncode in (0, 3), checked  # 3: lint findings only, the text parsed
    return [
        x for x in lines if x != 'capacity_days_to_breach use base unit "seconds" instead of "days"'
    ]


def test_the_file_passes_promtool_check_metrics(prom_run):
    assert lint_findings(prom_run["textfile"].read_text()) == []


def test_the_values_are_the_published_tables(prom_run):
    from capacity_assets.store.queries import query

    db, (server, resource) = prom_run["db"], TINY_SATURATING
    found = samples(prom_run["textfile"].read_text())
    golden = query(
        db,
        "select yhat, yhat_upper, trust from forecasts where server_id = ? and resource = ? "
        "order by ds",
        [server, resource],
    )
    at = {"instance": server, "resource": resource}
    # forecast day 90 is the 90th row of the golden record; percent in the table, a ratio here
    assert one(found, "capacity_forecast_upper_ratio", horizon="90d", **at) == pytest.approx(
        golden["yhat_upper"].iloc[89] / 100, rel=1e-9
    )
    assert one(found, "capacity_forecast_ratio", horizon="30d", **at) == pytest.approx(
        golden["yhat"].iloc[29] / 100, rel=1e-9
    )
    assert (
        one(found, "capacity_forecast_trust", **at)
        == {"low": 0, "medium": 1, "high": 2}[golden["trust"].iloc[0]]
    )
    risk = query(
        db,
        "select server_id, resource, department, app_manager, first_breach_date, days_to_breach "
        "from risk_exceptions",
    )
    assert list(zip(risk["server_id"], risk["resource"])) == [TINY_SATURATING]
    row = risk.iloc[0]
    assert one(
        found,
        "capacity_breach_timestamp_seconds",
        department=row["department"],
        app_manager=row["app_manager"],
        **at,
    ) == unix(row["first_breach_date"])
    assert one(found, "capacity_days_to_breach", **at) == row["days_to_breach"]
    threshold = query(
        db,
        "select threshold from capacity_plan where server_id = ? and resource = ?",
        [server, resource],
    )
    assert one(found, "capacity_threshold_ratio", **at) == threshold["threshold"].iloc[0] / 100
    ledger = query(db, "select batch, published_at from batch_ledger order by batch")
    for b, published in ledger.itertuples(index=False):
        assert one(found, "capacity_batch_published_timestamp_seconds", batch=b) == pytest.approx(
            unix(published), abs=1
        )


def test_the_server_label_follows_CAPACITY_PROM_SERVER_LABEL(prom_run):
    text = prom_run["textfile"].read_text()
    env = {**prom_run["env"], "CAPACITY_PROM_SERVER_LABEL": "host"}
    renamed = capacity("export", "prometheus", "--out", "-", cwd=prom_run["work"], env=env).stdout
    assert "instance=" not in renamed and renamed == text.replace('{instance="', '{host="')

    env["CAPACITY_PROM_SERVER_LABEL"] = "resource"  # would collide with the resource label
    refused = capacity(
        "export", "prometheus", "--out", "-", cwd=prom_run["work"], env=env, check=False
    )
    assert refused.returncode == 2 and "CAPACITY_PROM_SERVER_LABEL='resource'" in refused.stderr


def test_the_same_file_from_a_postgresql_store(prom_run, postgres_server, tmp_path):
    """The store's read works on PostgreSQL: the run's published tables copied there give the
    very same file."""
    from capacity_assets.schema import DATE_COLUMNS, quote_ident
    from capacity_assets.store import db
    from capacity_assets.store.queries import read_table

    pg = postgres_server.create_database()
    with db.writing(pg) as conn:
        for table in ("forecasts", "capacity_plan", "risk_exceptions", "batch_ledger"):
            frame = read_table(prom_run["db"], table)
            conn.register("obj", frame)
            listed = ", ".join(
                f"cast({quote_ident(c)} as date) as {quote_ident(c)}"
                if c in DATE_COLUMNS
                else quote_ident(c)
                for c in frame.columns
            )
            db.replace_table(conn, f"main.{quote_ident(table)}", f"select {listed} from obj")
            conn.unregister("obj")
    out = tmp_path / "pg.prom"
    write_forecasts(pg, out)
    assert out.read_text() == prom_run["textfile"].read_text()


def test_export_without_published_forecasts_is_refused(tmp_path):
    proc = capacity(
        "export",
        "prometheus",
        "--out",
        str(tmp_path / "x.prom"),
        "--db",
        str(tmp_path / "empty.duckdb"),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert "empty.duckdb has no published forecasts yet: run `capacity run`" in proc.stderr
    assert not (tmp_path / "x.prom").exists()


def _tables(ids: list[str]) -> dict[str, pd.DataFrame]:
    rows = [
        {"batch": "batch_00", "server_id": s, "resource": "cpu", "day": d, "yhat": 50.0 + d / 10}
        for s in ids
        for d in (1, 30, 90, 180)
    ]
    points = pd.DataFrame(rows).assign(yhat_upper=lambda f: f["yhat"] + 5, trust="medium")
    plan = pd.DataFrame(
        {
            "batch": "batch_00",
            "server_id": ids,
            "resource": "cpu",
            "department": 'R&D "core"',
            "app_manager": "a\\b",
            "threshold": 90.0,
        }
    )
    risk = plan.drop(columns="threshold").assign(
        first_breach_date=pd.Timestamp("2026-01-02"), days_to_breach=1
    )
    ledger = pd.DataFrame({"batch": ["batch_00"], "published_at": [pd.Timestamp("2026-01-01")]})
    return {"points": points, "plan": plan, "risk": risk, "ledger": ledger}


def test_label_values_are_escaped_and_samples_sorted():
    """Server ids are kept exactly as given (quotes, backslashes, line breaks): the file escapes
    them as the format says, promtool reads it, and the order does not depend on the rows'."""
    ids = ['web "01"', "c:\\srv", "two\nlines", "ü-01"]
    frames = _tables(ids)
    text = exposition(**frames)
    assert lint_findings(text) == []
    found = samples(text)
    assert {dict(ls)["instance"] for (m, ls) in found if m == "capacity_forecast_trust"} == set(ids)
    breach = one(found, "capacity_breach_timestamp_seconds", instance="two\nlines")
    assert breach == unix("2026-01-02")
    horizons = [dict(ls)["horizon"] for (m, ls) in found if m == "capacity_forecast_ratio"]
    assert horizons[:3] == ["30d", "90d", "180d"]
    shuffled = {k: f.sample(frac=1, random_state=1) for k, f in frames.items()}
    assert exposition(**shuffled) == text


def test_a_slower_older_reading_never_overwrites_a_newer_file(tmp_path):
    """Two runs finishing together: the one that read the store first must not write last."""
    path, reading = tmp_path / "capacity.prom", threading.Event()

    def older() -> str:
        reading.set()
        time.sleep(0.5)  # a slow read of the store
        return "old\n"

    first = threading.Thread(target=refresh, args=(path, older))
    first.start()
    reading.wait(5)
    refresh(path, lambda: "new\n")  # starts reading after the first did
    first.join()
    assert path.read_text() == "new\n"


def test_the_alerting_rules_pass_promtool_and_fire(tmp_path):
    assert promtool("check", "rules", str(RULES)).returncode == 0
    labels = {"department": "Payments", "app_manager": "ana@example.com"}
    series = ",".join(f'{k}="{v}"' for k, v in labels.items())
    cases = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # breaches in 20 days, in 60 days; already above (the last history day)
                    {
                        "series": f'capacity_breach_timestamp_seconds{{instance="web-01",resource="disk",{series}}}',
                        "values": f"{20 * 86400}+0x15000",
                    },
                    {
                        "series": f'capacity_breach_timestamp_seconds{{instance="web-02",resource="cpu",{series}}}',
                        "values": f"{60 * 86400}+0x15000",
                    },
                    {
                        "series": f'capacity_breach_timestamp_seconds{{instance="web-03",resource="memory",{series}}}',
                        "values": "0+0x15000",
                    },
                    # published at 0 and on day 5
                    {
                        "series": 'capacity_batch_published_timestamp_seconds{batch="batch_00"}',
                        "values": "0+0x15000",
                    },
                    {
                        "series": 'capacity_batch_published_timestamp_seconds{batch="batch_01"}',
                        "values": f"{5 * 86400}+0x15000",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "1h",
                        "alertname": "CapacityBreachWithin30Days",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "instance": "web-01",
                                    "resource": "disk",
                                    **labels,
                                },
                                "exp_annotations": {
                                    "summary": "web-01: disk forecast to reach its threshold "
                                    "within 30 days",
                                    "description": "The capacity forecast's upper bound for disk "
                                    "on web-01 (department Payments, app manager ana@example.com) "
                                    "reaches its threshold in 19d 23h 0m 0s. The capacity plan "
                                    "says what to add and by when: `capacity report --out "
                                    "reports/` or the dashboard's deep dive.",
                                },
                            },
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "instance": "web-03",
                                    "resource": "memory",
                                    **labels,
                                },
                                "exp_annotations": {
                                    "summary": "web-03: memory forecast to reach its threshold "
                                    "within 30 days",
                                    "description": "The capacity forecast's upper bound for "
                                    "memory on web-03 (department Payments, app manager "
                                    "ana@example.com) has already reached its threshold. The "
                                    "capacity plan says what to add and by when: `capacity report "
                                    "--out reports/` or the dashboard's deep dive.",
                                },
                            },
                        ],
                    },
                    {
                        "eval_time": "9d",
                        "alertname": "CapacityBatchNotPublished",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "batch": "batch_00"},
                                "exp_annotations": {
                                    "summary": "Capacity forecasts of batch_00 not published for "
                                    "over 8 days",
                                    "description": "batch_00 was last published 9d 0h 0m 0s ago. "
                                    "Look for a failed capacity_forecast run in the Dagster UI "
                                    "(the run names the batch and the step); `capacity run "
                                    "--batch batch_00` re-runs it alone.",
                                },
                            }
                        ],
                    },
                    {"eval_time": "9d", "alertname": "CapacityForecastsMissing", "exp_alerts": []},
                ],
            },
            {  # nothing scraped at all
                "interval": "1m",
                "input_series": [{"series": "up", "values": "1+0x200"}],
                "alert_rule_test": [
                    {
                        "eval_time": "2h",
                        "alertname": "CapacityForecastsMissing",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning"},
                                "exp_annotations": {
                                    "summary": "No capacity forecasts in Prometheus",
                                    "description": "capacity_batch_published_timestamp_seconds is "
                                    "not scraped. Check that CAPACITY_PROM_TEXTFILE names a *.prom "
                                    "file in node_exporter's --collector.textfile.directory, that "
                                    "a run has written it (or `capacity export prometheus --out "
                                    "FILE`), and node_textfile_scrape_error.",
                                },
                            }
                        ],
                    }
                ],
            },
        ],
    }
    spec = tmp_path / "rules_test.yml"
    spec.write_text(json.dumps(cases))  # YAML reads JSON
    tested = promtool("test", "rules", str(spec))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_grafana_dashboard_queries_what_the_file_and_node_exporter_have(prom_run, tmp_path):
    board = json.loads(DASHBOARD.read_text())
    exported = {m for m, _ in samples(prom_run["textfile"].read_text())}
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    variables = [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    for expr in exprs + variables:
        for name in re.findall(r"\bcapacity_[a-z_]+", expr):
            assert name in exported, (name, expr)
        for name in re.findall(r"[a-z_:]*node_[a-z_:]+", expr):
            assert name.startswith(("node_", "instance:node_")), (name, expr)
    assert all(
        d == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        for p in board["panels"]
        for d in [p["datasource"], *(t["datasource"] for t in p["targets"])]
    )
    # the forecast's upper bound next to the live node_exporter metric it was computed from
    for resource in ("cpu", "memory", "disk", "network"):
        (panel,) = [p for p in board["panels"] if p["title"].startswith(f"{resource}:")]
        queries = " ".join(t["expr"] for t in panel["targets"])
        assert f'capacity_forecast_upper_ratio{{instance=~"$instance",resource="{resource}"}}' in (
            queries
        )
        assert "node_" in queries
    # every query is PromQL that Prometheus parses, once Grafana has put in the variables
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": re.sub(r"\$\w+", ".*", e)}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(json.dumps(rules))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
