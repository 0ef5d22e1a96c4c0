"""`capacity`: the command line a planner uses. Flags override the CAPACITY_* environment variables.

It parses flags and prints; the settings come from ``config.load()`` and the work of `capacity run`
from ``pipeline.workflow``, imported when a command needs them, so `capacity --help` stays quick and
importing this module loads no Dagster.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

# flag -> environment variable; flags are applied to the environment so that Dagster runs in
# other processes (parallel batches, the UI) see the same configuration
FLAG_ENV = {
    "metrics": "CAPACITY_METRICS",
    "hierarchy": "CAPACITY_HIERARCHY",
    "db": "CAPACITY_DB",
    "batches": "CAPACITY_BATCHES",
    "daily_agg": "CAPACITY_DAILY_AGG",
}
# read from the working folder, as `dg dev` and `dagster` read it
ENV_FILE = ".env"


def _add_config_flags(p: argparse.ArgumentParser, metrics: bool = True) -> None:
    if metrics:
        p.add_argument(
            "--metrics",
            help="metrics CSV/Parquet path or glob (CAPACITY_METRICS; default: the demo fleet)",
        )
        p.add_argument("--hierarchy", help="hierarchy CSV/Parquet path (CAPACITY_HIERARCHY)")
        p.add_argument(
            "--daily-agg",
            choices=["mean", "max", "p95"],
            help="daily value of sub-daily samples (CAPACITY_DAILY_AGG)",
        )
    p.add_argument(
        "--db",
        help="the store: a DuckDB file or a postgresql:// URL (CAPACITY_DB, default "
        "data/capacity.duckdb)",
    )
    p.add_argument(
        "--batches", type=int, help="number of server batches (CAPACITY_BATCHES, default 20)"
    )


def _at_least(minimum: int):
    """An argparse type: a whole number of at least ``minimum``, refused with a message otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected a whole number of at least {minimum}, not {text!r}"
            )
        return value

    return parse


_positive = _at_least(1)


def _day(text: str) -> str:
    import datetime

    try:
        datetime.date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day as YYYY-MM-DD, not {text!r}") from None
    return text.strip()


def _apply(args) -> None:
    for flag, env in FLAG_ENV.items():
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[env] = str(value)


def _settings():
    """Read after ``_apply``: the flags are in the environment by then."""
    from capacity_assets import config

    return config.load()


def _fail(message: str, code: int = 2) -> int:
    print(f"capacity: error: {message}", file=sys.stderr)
    return code


def cmd_run(args, title: str = "") -> int:
    """``title``: what the progress display calls this run (`capacity demo --weeks`: the week)."""
    from capacity_assets.cli.progress import for_stream
    from capacity_assets.pipeline.workflow import run_fleet

    _apply(args)
    settings = _settings()
    cores = os.cpu_count() or 1
    if args.workers and args.workers > cores:
        from capacity_assets.pipeline.executors import run_slots

        slots = run_slots(settings, cores)  # a shared Dask cluster: its worker threads
        if args.workers > slots:
            print(
                f"capacity run: --workers {args.workers} capped to {slots}, the number of "
                + (
                    "the Dask cluster's worker threads: more runs than those only wait"
                    if slots > cores
                    else "cores: more batch processes than cores only add memory (~0.5–1 GB each)"
                )
            )
            args.workers = slots  # `capacity demo --weeks` runs again with these args: said once
    # live on a terminal, plain lines in a log; closed (the last state left shown) before the summary
    with for_stream(sys.stdout, title) as shown:
        result = run_fleet(
            settings,
            args.batch,
            args.workers,
            force=args.force,
            verbose=args.verbose,
            echo=shown.echo,
            watch=shown,
        )
    if result.summary:
        print(result.summary)
    if result.detail:
        print(result.detail, file=sys.stderr)
    return _fail(result.error, code=result.code) if result.error else 0


def cmd_demo(args) -> int:
    import pandas as pd

    from capacity_assets.demo.ensure import yesterday
    from capacity_assets.demo.fleet import write_fleet

    if args.no_run and args.weeks:
        return _fail("--weeks replays runs and --no-run runs nothing: give one of them")
    if args.out is None:
        args.out = _settings().demo_dir  # `replay_weeks` writes each week's files under it
    out = Path(args.out)
    end = pd.Timestamp(args.end) if args.end else yesterday()
    info = write_fleet(out, servers=args.servers, months=args.months, seed=args.seed, end=end)
    print(
        f"capacity demo: wrote {info['rows']:,} rows for {args.servers} servers x 4 resources x "
        f"{args.months} months ending {end:%Y-%m-%d} to {info['metrics']} and the hierarchy to {info['hierarchy']}"
    )
    if args.no_run:
        return 0
    os.environ["CAPACITY_HIERARCHY"] = str(info["hierarchy"])
    if not args.weeks:
        os.environ["CAPACITY_METRICS"] = str(info["metrics"])
        return cmd_run(args)
    return replay_weeks(args, info["metrics"], end)


def replay_weeks(args, metrics: str, end) -> int:
    """Run the graph once per week on the same fleet, its history ending the Sunday before each of
    the last ``--weeks`` Mondays, oldest first: the track record fills as it would in production."""
    import duckdb
    import pandas as pd

    from capacity_assets.cli.progress import week_label

    mondays = [
        d
        for d in pd.date_range(
            end - pd.Timedelta(days=7 * args.weeks + 6), end + pd.Timedelta(days=1)
        )
        if d.dayofweek == 0
    ][-args.weeks :]
    code = 0
    for i, monday in enumerate(mondays, 1):
        week = Path(args.out) / "weeks" / f"{monday:%Y-%m-%d}"
        week.mkdir(parents=True, exist_ok=True)
        target = week / "metrics.parquet"
        if not target.exists():
            with duckdb.connect() as conn:  # the target is ours (a date); the input path is bound
                conn.execute(
                    f"copy (select * from read_parquet($1) where timestamp < $2) to '{target}' "
                    f"(format parquet)",
                    [metrics, monday.to_pydatetime()],
                ).fetchall()
        print(
            f"capacity demo: week {i}/{len(mondays)}: history up to {monday - pd.Timedelta(days=1):%Y-%m-%d}"
        )
        os.environ["CAPACITY_METRICS"] = str(target)
        code = cmd_run(args, title=week_label(i, len(mondays), monday)) or code
    return code


def _size_ui_runs(settings) -> None:
    """Set CAPACITY_BATCHES_PER_RUN for the UI from the fleet size (unless the user set it), so a UI
    backfill of a large fleet gets runs no larger than `capacity run`'s (memory), like its ranges."""
    import duckdb

    from capacity_assets.inputs import files
    from capacity_assets.pipeline.runner import batches_per_run

    if settings.batches_per_run:
        return
    if settings.uses_prometheus:
        print(
            "capacity ui: a UI backfill runs one range of batches per core; for a fleet of over "
            f"{settings.servers_per_run} servers set CAPACITY_BATCHES_PER_RUN so a run holds at most that many"
        )
        return
    try:  # the input files only: the database may be busy with a run, and the UI must start anyway
        with duckdb.connect() as conn:
            servers = len(
                files.distinct_servers(conn, files.inspect_metrics(conn, settings.metrics_glob))
            )
    except files.InputError as e:
        print(
            f"capacity ui: could not count the fleet's servers, so a UI backfill runs one range of batches "
            f"per core: {e}"
        )
        return
    per_run = batches_per_run(
        settings.batches, os.cpu_count() or 1, servers, servers_per_run=settings.servers_per_run
    )
    os.environ["CAPACITY_BATCHES_PER_RUN"] = str(per_run)
    print(
        f"capacity ui: a UI backfill runs {per_run} batch(es) per run ({servers} servers in {settings.batches} "
        f"batches; at most {settings.servers_per_run} servers a run)"
    )


def _env_file_disagreements() -> list[str]:
    """What ./.env sets otherwise than `capacity` uses (a flag or the environment won): Dagster's
    processes let .env win, so `dg dev` would serve another instance or database than announced.
    Names only: values may be secrets."""
    from dotenv import dotenv_values

    path = Path(ENV_FILE)
    if not path.is_file():
        return []
    found = []
    for key, value in dotenv_values(path).items():
        ours = os.environ.get(key)
        if value is None:
            continue
        if key == "DAGSTER_HOME":
            home = Path(os.path.expanduser(value))
            if not home.is_absolute():
                found.append(f"DAGSTER_HOME is {value!r}, and Dagster needs an absolute path")
                continue
            if ours and home.resolve() == Path(ours).resolve():
                continue
        if ours != value:
            found.append(f"{key} is not what a flag or the environment gives")
    return found


def cmd_ui(args) -> int:
    """`dg dev`: the webserver and the daemon (schedules, sensors, backfills) on `capacity run`'s
    instance; the code location is loaded in this Python, so no uv is needed."""
    import shutil

    from capacity_assets.pipeline.instance import ensure_home

    _apply(args)
    disagree = _env_file_disagreements()
    if disagree:
        return _fail(
            f"{Path(ENV_FILE).resolve()}: {'; '.join(disagree)}. Dagster's processes (dg dev) take "
            ".env's values, so the UI would not show what `capacity` uses: change .env, or unset "
            "the variable and drop the flag"
        )
    settings = _settings()
    home = ensure_home()
    _size_ui_runs(settings)
    target = (
        ["-w", "workspace.yaml"]
        if Path("workspace.yaml").exists()
        else ["-m", "capacity_assets.pipeline.definitions"]
    )
    exe = Path(sys.executable).with_name("dg")
    dg = str(exe) if exe.exists() else shutil.which("dg")
    if dg is None:
        return _fail("`dg` is not installed: pip install dagster-dg-cli (a dependency of capacity)")
    cmd = [dg, "dev", *target, "-h", args.host, "-p", str(args.port)]
    print(
        f"capacity ui: http://{args.host}:{args.port} (dg dev: webserver and daemon; "
        f"DAGSTER_HOME={home})",
        flush=True,
    )
    os.execv(dg, cmd)  # dg dev gets Ctrl-C itself and shuts its daemon and webserver down


def cmd_report(args) -> int:
    from capacity_assets.risk.plan import sort_plan
    from capacity_assets.risk.report import PLAN_PREFIX, write_department_reports
    from capacity_assets.store.queries import read_table

    _apply(args)
    settings = _settings()
    risk = read_table(settings.database, "risk_exceptions")
    if risk is None:
        return _fail(
            f"{settings.database} has no risk_exceptions table yet: run `capacity run` (or `capacity demo`) first"
        )
    paths = write_department_reports(risk, args.out)
    plan = read_table(settings.database, "capacity_plan")
    if plan is not None:
        paths += write_department_reports(sort_plan(plan), args.out, prefix=PLAN_PREFIX)
    deps = risk["department"].nunique()
    print(
        f"capacity report: {len(risk)} series at risk in {deps} department{'' if deps == 1 else 's'}"
        + (
            f"; capacity plan: {int((plan['action'] == 'add').sum())} to add, "
            f"{int((plan['action'] == 'reclaim').sum())} to reclaim"
            if plan is not None
            else ""
        )
        + f"; wrote {len(paths)} files to {args.out}"
    )
    for p in paths:
        print(f"  {p}")
    return 0


def cmd_export(args) -> int:
    """The published forecasts in Prometheus' text format: the file a run writes to
    CAPACITY_PROM_TEXTFILE, on demand (a first file, another folder, or stdout with `--out -`)."""
    from capacity_assets.export.prometheus import ExportError
    from capacity_assets.export.textfile import write_forecasts
    from capacity_assets.store.monitoring import NothingPublished

    _apply(args)
    settings = _settings()
    try:
        counts = write_forecasts(settings.database, args.out, settings.prom_server_label)
    except (NothingPublished, ExportError) as e:
        return _fail(str(e))
    if args.out == "-":
        sys.stdout.write(counts["text"])
        return 0
    print(
        f"capacity export: wrote {counts['series']} series ({counts['at_risk']} at risk) of "
        f"{counts['batches']} batches to {args.out}"
    )
    return 0


def cmd_notify(args) -> int:
    import json
    import logging

    from capacity_assets.config import smtp_settings
    from capacity_assets.notify.run import NothingToRead, NotifyError, notify
    from capacity_assets.notify.smtp import SmtpUnavailable

    _apply(args)
    settings = _settings()
    logging.basicConfig(level=logging.INFO, format="capacity notify: %(message)s")
    try:
        smtp = smtp_settings()
    except ValueError as e:
        return _fail(str(e))
    if not args.dry_run and not smtp.configured:
        return _fail(
            "set CAPACITY_SMTP_HOST to send, or give --dry-run --out DIR to write the messages"
        )
    if args.dry_run and not args.out:
        return _fail("--dry-run needs --out DIR: where the .eml files go")
    try:
        summary = notify(
            settings.database,
            smtp,
            settings.dashboard_url,
            dry_run=args.dry_run,
            out_dir=args.out,
            rollup=args.rollup,
        )
    except NothingToRead as e:
        return _fail(str(e))
    except (SmtpUnavailable, NotifyError) as e:
        return _fail(str(e), code=1)
    print(json.dumps(summary, indent=2, default=str))
    return 1 if summary["failures"] else 0


def cmd_whatif(args) -> int:
    """The scenarios of a file against the published results, without refitting: what changes."""
    import json
    from functools import partial

    from capacity_assets.store.whatif import NothingToCompare, read_published
    from capacity_assets.whatif.compare import text
    from capacity_assets.whatif.report import involved_servers, whatif
    from capacity_assets.whatif.scenarios import ScenarioError, load

    _apply(args)
    # FILE is what is asked about: the CAPACITY_SCENARIOS of the environment (or .env), which the
    # settings check when they load, is not its business
    os.environ["CAPACITY_SCENARIOS"] = ""
    settings = _settings()
    try:
        scenarios = load(args.file)
        if args.scenario:
            names = [s.name for s in scenarios]
            if args.scenario not in names:
                return _fail(
                    f"{args.file} has no scenario {args.scenario!r} (it has: {', '.join(names)})"
                )
            scenarios = tuple(s for s in scenarios if s.name == args.scenario)
        published = read_published(settings.database, partial(involved_servers, scenarios))
        results = whatif(scenarios, published, settings)
    except (ScenarioError, NothingToCompare) as e:
        return _fail(str(e))
    if args.json:
        objects = [r.difference for r in results]
        print(json.dumps(objects[0] if len(objects) == 1 else objects, indent=2))
        for r in results:
            for note in r.notes:
                print(f"capacity whatif: {r.name}: {note}", file=sys.stderr)
        return 0
    print("\n\n".join(text(r.difference, r.notes) for r in results))
    return 0


def cmd_dashboard(args) -> int:
    _apply(args)
    settings = _settings()
    app = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    print(
        f"capacity dashboard: http://{args.host}:{args.port} (reading {settings.database})",
        flush=True,
    )
    os.execv(
        sys.executable,
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(app),
            "--server.port",
            str(args.port),
            "--server.address",
            args.host,
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--client.toolbarMode",
            "viewer",
        ],
    )


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(
        prog="capacity",
        description=(
            "Capacity forecasting for server fleets: which servers run out of CPU, memory, disk or network "
            "in the next 90 days, who owns them, and how far to trust the forecast."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def run_flags(p):
        p.add_argument(
            "--workers",
            type=_positive,
            default=None,
            help="worker processes that run batches in parallel (at most the number of cores); "
            "default: one per core, or one per 25 servers to run for a small fleet",
        )
        p.add_argument(
            "--batch", action="append", help="run only this batch (repeatable), e.g. batch_03"
        )
        p.add_argument(
            "--verbose", action="store_true", help="show Dagster's INFO logs of every run"
        )
        p.add_argument(
            "--force",
            action="store_true",
            help="re-run every batch, even those unchanged since they were last published",
        )

    p = sub.add_parser(
        "demo",
        help="write the built-in demo fleet (Parquet + hierarchy) and run the whole pipeline on it",
    )
    p.add_argument(
        "--servers", type=_positive, default=200, help="servers in the demo fleet (default 200)"
    )
    p.add_argument(
        "--months", type=_positive, default=36, help="months of daily history (default 36)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed: same seed and end, same fleet (default 0)"
    )
    p.add_argument(
        "--end",
        type=_day,
        help="last day of history, YYYY-MM-DD (default: yesterday); same seed and end, same fleet",
    )
    p.add_argument(
        "--out",
        help="folder for the demo files (CAPACITY_DEMO_DIR, default data/demo)",
    )
    p.add_argument("--no-run", action="store_true", help="only write the files")
    p.add_argument(
        "--weeks",
        type=_at_least(0),
        default=0,
        help="replay: run the graph on the same fleet once per week, history ending before each of the "
        "last N Mondays, so forecast_history and forecast_accuracy fill as in production",
    )
    _add_config_flags(p, metrics=False)
    run_flags(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "run",
        help="materialise every asset for every batch, batches in parallel, then print a summary",
    )
    _add_config_flags(p)
    run_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "ui",
        help="start the Dagster UI and daemon (dg dev) on the same instance `capacity run` records to",
    )
    _add_config_flags(p)
    p.add_argument("--port", type=int, default=3000, help="port of the UI (default 3000)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser(
        "report",
        help="write the risk exception lists and the capacity plan: one CSV per department "
        "plus risk_all.csv and plan_all.csv",
    )
    p.add_argument("--out", required=True, help="folder to write the CSV files to")
    _add_config_flags(p, metrics=False)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "export", help="write the published forecasts for another system (Prometheus)"
    )
    formats = p.add_subparsers(dest="format", required=True)
    p = formats.add_parser(
        "prometheus",
        help="the Prometheus text file a run writes to CAPACITY_PROM_TEXTFILE (forecasts, days to "
        "breach, thresholds, trust, publication times), from the published tables",
    )
    p.add_argument(
        "--out",
        required=True,
        help="the file to write (atomically), e.g. /var/lib/node_exporter/textfile/capacity.prom; "
        "'-' for stdout",
    )
    p.add_argument("--db", help="the store: a DuckDB file or a postgresql:// URL (CAPACITY_DB)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "notify",
        help="mail each app manager their new or worsened exceptions (SMTP from "
        "CAPACITY_SMTP_*); each exception is mailed once",
    )
    p.add_argument("--db", help="the store: a DuckDB file or a postgresql:// URL (CAPACITY_DB)")
    p.add_argument(
        "--rollup", action="store_true", help="also send department heads their weekly roll-up"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="write .eml files instead of sending; records nothing",
    )
    p.add_argument("--out", help="with --dry-run: the folder for the .eml files")
    p.set_defaults(func=cmd_notify)

    p = sub.add_parser(
        "dashboard", help="start the executive dashboard (Streamlit), read-only on CAPACITY_DB"
    )
    p.add_argument("--port", type=int, default=8501, help="port of the dashboard (default 8501)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    _add_config_flags(p, metrics=False)
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser(
        "whatif",
        help="apply the scenarios of a file to the published golden record, without refitting, "
        "and print what changes: new and cleared exceptions, breach dates moved, capacity to add "
        "or reclaim by department",
    )
    p.add_argument("file", help="the scenarios YAML file (the format of CAPACITY_SCENARIOS)")
    p.add_argument("--scenario", help="only this scenario of the file")
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per scenario (a list when there are several)",
    )
    _add_config_flags(p, metrics=False)
    p.set_defaults(func=cmd_whatif)
    return parser


def _sigterm_as_interrupt(*_):
    raise KeyboardInterrupt


def _load_env_file() -> None:
    """Read ./.env as Dagster's tools do, so `capacity` and `dg dev` share DAGSTER_HOME and the
    CAPACITY_* settings; a variable already set in the environment wins, and a flag over both."""
    from dotenv import load_dotenv

    try:
        load_dotenv(ENV_FILE, override=False)
    except UnicodeDecodeError:
        raise ValueError(f"{Path(ENV_FILE).resolve()} is not a UTF-8 text file") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        _load_env_file()
    except ValueError as e:
        return _fail(str(e))
    from capacity_assets.config import ConfigError
    from capacity_assets.inputs.files import InputError
    from capacity_assets.inputs.prometheus import PrometheusError
    from capacity_assets.store.db import DatabaseBusy, StorageError

    try:
        return args.func(args)
    except (ConfigError, InputError, StorageError, DatabaseBusy, PrometheusError) as e:
        return _fail(str(e))
    except OSError as e:  # a folder or file a setting names cannot be used (CAPACITY_DB, DAGSTER_HOME, --out ...)
        if e.filename is None:
            raise
        return _fail(f"{e.filename}: {e.strerror or e}")
    except KeyboardInterrupt:
        if args.command not in ("run", "demo"):
            return 130
        return _fail(
            "interrupted: batches that finished are published whole; the others keep their previous "
            "results (nothing half-written); re-run to finish them",
            code=130,
        )


if __name__ == "__main__":
    sys.exit(main())
