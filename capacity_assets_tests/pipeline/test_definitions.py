"""The code location loads as Dagster sees it, on current APIs only, and its resource mirrors the settings."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from capacity_assets.config import CapacitySettings

REPO = Path(__file__).resolve().parents[2]


def test_definitions_load_in_dagster():
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from capacity_assets.pipeline.definitions import defs

    defs = defs()
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        "business_hierarchy",
        "processed_data",
        "skipped_series",
        "prophet_results",
        "ets_results",
        "challenger_results",
        "combination_results",
        "champions",
        "forecasts",
        "risk_exceptions",
        "capacity_plan",
        "forecast_history",
        "risk_history",
        "forecast_accuracy",
        "risk_calls",
        "risk_resolved",
        "scenario_forecasts",
        "scenario_risk",
        "scenario_plan",
        "batch_ledger",
        "prometheus_textfile",
        "pool_outlook",
        "pool_demand",
    }
    # the schedules the README names, by those names (the UI shows these)
    assert {s.name for s in defs.schedules} == {
        "weekly_forecast",
        "weekly_hierarchy",
        "daily_freshness",
    }


def test_definitions_raise_no_deprecation_warning():
    code = (
        "import capacity_assets.pipeline.definitions as d; d.defs().resolve_job_def('capacity_forecast'); "
        "d.defs().resolve_asset_graph()"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_whole_run_raises_no_deprecation_warning_from_the_project(tiny_fleet, tmp_path):
    """Every asset, check and IO-manager call of a real run, in one process with the project's
    DeprecationWarnings and FutureWarnings as errors (a step that raises one fails, and so does the
    command). Dagster attributes its deprecations to the caller, so a normal run's output hides them."""
    env = {
        **os.environ,
        "CAPACITY_METRICS": tiny_fleet["metrics"],
        "CAPACITY_HIERARCHY": tiny_fleet["hierarchy"],
        "CAPACITY_DB": str(tmp_path / "cap.duckdb"),
        "DAGSTER_HOME": str(tmp_path / ".dagster"),
    }
    code = (
        "import sys, warnings; "
        "warnings.filterwarnings('error', category=DeprecationWarning, module='capacity_assets'); "
        "warnings.filterwarnings('error', category=FutureWarning, module='capacity_assets'); "
        "from capacity_assets.cli.main import main; sys.exit(main(['run', '--workers', '1']))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "series forecast:" in proc.stdout


def test_settings_resource_has_every_setting_and_no_default_of_its_own():
    from capacity_assets.pipeline.resources import SettingsResource

    names = [f.name for f in dataclasses.fields(CapacitySettings)]
    assert list(SettingsResource.model_fields) == names
    assert all(f.is_required() for f in SettingsResource.model_fields.values())
    custom = CapacitySettings(threshold=90.0, batches=7, metrics="m/*.csv")
    assert SettingsResource.wrap(custom).get() == custom


def test_cli_dashboard_and_report_import_no_dagster():
    code = (
        "import sys, capacity_assets.cli.main, capacity_assets.dashboard.data, capacity_assets.dashboard.charts, "
        "capacity_assets.risk.report, capacity_assets.store.queries, capacity_assets.config; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'dagster_duckdb')); "
        "assert not bad, bad"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_only_the_pipeline_package_imports_dagster():
    offenders = []
    for path in (REPO / "capacity_assets").rglob("*.py"):
        if "pipeline" in path.relative_to(REPO / "capacity_assets").parts:
            continue
        text = path.read_text()
        if "import dagster" in text or "from dagster" in text:
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_a_password_in_the_prometheus_url_is_not_shown_by_the_ui_and_a_run_still_gets_it(
    monkeypatch,
):
    """The UI's resource page shows what the code server sends it (the repository snapshot): a password
    written into CAPACITY_METRICS must not be in it, while the run's assets still read the whole URL."""
    import dagster as dg

    url = "prometheus+http://capacity:Right-Pa55word@127.0.0.1:9090"
    code = (
        "from dagster._core.remote_representation.external_data import RepositorySnap; "
        "from dagster._serdes import serialize_value; "
        "from capacity_assets.pipeline.definitions import defs; "
        "print(serialize_value(RepositorySnap.from_def(defs().get_repository_def())))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "CAPACITY_METRICS": url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Right-Pa55word" not in proc.stdout and "CAPACITY_METRICS" in proc.stdout

    from capacity_assets.config import prometheus_credentials
    from capacity_assets.pipeline.resources import PrometheusResource, SettingsResource

    monkeypatch.setenv(
        "CAPACITY_METRICS", url + " \n"
    )  # a .env file's trailing blank: still hidden
    settings = CapacitySettings.from_env()
    prometheus = PrometheusResource.wrap(settings, prometheus_credentials())
    assert isinstance(prometheus.url, dg.EnvVar)
    assert "Right-Pa55word" not in SettingsResource.wrap(settings).metrics
    seen = {}

    @dg.asset
    def probe(prometheus: PrometheusResource) -> None:
        seen["url"] = prometheus.url.strip()

    assert dg.materialize([probe], resources={"prometheus": prometheus}).success
    assert seen["url"] == url
    # without a password the value is shown as it is
    plain = CapacitySettings(metrics="prometheus+http://127.0.0.1:9090")
    assert PrometheusResource.wrap(plain, {}).url == "prometheus+http://127.0.0.1:9090"
    assert SettingsResource.wrap(plain).metrics == "prometheus+http://127.0.0.1:9090"


def test_two_environments_in_one_process_give_two_consistent_sets_of_definitions():
    """A test, a worker on another host or a code-server reload builds the definitions from one set
    of settings: partitions, contenders, kept vintages and the resources all agree with it."""
    from capacity_assets import config
    from capacity_assets.inputs.batching import batch_keys
    from capacity_assets.notify.smtp import SmtpSettings
    from capacity_assets.pipeline.definitions import build_defs

    small = config.load({"CAPACITY_BATCHES": "3", "CAPACITY_ENGINES": "prophet,challenger"})
    large = config.load({"CAPACITY_BATCHES": "5", "CAPACITY_KEEP_VINTAGES": "4"})
    a, b = (build_defs(s, SmtpSettings(), {}) for s in (small, large))
    for defs, settings in ((a, small), (b, large)):
        graph = defs.resolve_asset_graph()
        for key in graph.get_all_asset_keys():
            node = graph.get(key)
            if node.is_partitioned:
                assert node.partitions_def.get_partition_keys() == batch_keys(settings.batches), key
        assert defs.resolve_job_def("capacity_forecast").executor_def is not None
        assert defs.resources["settings"].get() == settings
    names = lambda d: {k.to_user_string() for k in d.resolve_asset_graph().get_all_asset_keys()}  # noqa: E731
    assert "ets_results" not in names(a) and "ets_results" in names(b)
    keep = b.resolve_assets_def("forecast_history").metadata_by_key[dg_key("forecast_history")]
    assert keep["capacity/keep"] == 4


def dg_key(name: str):
    import dagster as dg

    return dg.AssetKey(name)


def test_no_module_reads_the_environment_when_it_is_imported():
    """Every module imports under settings that are all wrong; only building the definitions (or
    loading the settings) reads them, and then names the variable."""
    code = (
        "import importlib, pkgutil, capacity_assets\n"
        "for m in pkgutil.walk_packages(capacity_assets.__path__, 'capacity_assets.'):\n"
        "    if not m.name.endswith(('__main__', 'dashboard.app')):\n"
        "        importlib.import_module(m.name)\n"
        "from capacity_assets.pipeline.definitions import defs\n"
        "try:\n    defs()\nexcept ValueError as e:\n    print('REFUSED', e)\n"
    )
    bad = {
        "CAPACITY_BATCHES": "many",
        "CAPACITY_KEEP_VINTAGES": "x",
        "CAPACITY_SMTP_PORT": "smtp",
        "CAPACITY_LOCK_TIMEOUT": "abc",
        "CAPACITY_BATCHES_PER_RUN": "?",
    }
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, **bad},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REFUSED CAPACITY_" in proc.stdout


def test_only_config_reads_capacity_settings_and_asset_modules_stand_alone():
    import re

    read = re.compile(r"""(environ\.get\(|getenv\(|environ\[)\s*["']CAPACITY_(?!.*\]\s*=[^=])""")
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for path in (REPO / "capacity_assets").rglob("*.py")
        if path.name != "config.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if read.search(line)
    ]
    assert offenders == []
    for path in (REPO / "capacity_assets" / "pipeline" / "assets").glob("*.py"):
        assert "pipeline.assets" not in path.read_text(), path.name
