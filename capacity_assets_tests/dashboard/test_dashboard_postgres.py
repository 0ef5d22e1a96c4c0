"""The dashboard on PostgreSQL reads what it reads on DuckDB: the same tables in both stores, and every
``data`` function must return equal frames from each.

The tables are the replayed track record (``track_db``) doctored with what the pipeline rarely
writes but a fleet has: a server id full of quotes, unicode and SQL, departments whose order depends
on the collation, ties and NULLs in every ORDER BY, resolved exceptions without a reason. They are
copied into PostgreSQL as they are (no pipeline run), with every text column given an English ICU
collation when the server has one, so an ORDER BY that leaves text to the database's locale shows
up as a difference instead of passing on a C-locale test server.

Also what only PostgreSQL has: a version that is a query, a writer's table lock instead of a lock
file, and a URL that may carry a password no page may show.
"""

from __future__ import annotations

import dataclasses
import time

import pandas as pd
import pytest

from capacity_assets.dashboard import data
from capacity_assets.store import postgres
from capacity_assets.store.db import Database, reading, table_names, writing
from capacity_assets_tests.dashboard.test_dashboard import (
    NASTY_ID,
    app,
    copy_db,
    figures,
    heatmap_cells,
    open_view,
    texts,
)

VIEWS = ("Risk heatmap", "Capacity plan", "Track record", "Tournament summary", "Deep dive")
# C sorts capitals first and non-ASCII last; an English collation mixes them: a wrong ORDER BY shows
DEPARTMENTS = {"Data Platform": "data platform", "Payments": "Éclair Ops"}
LOCALE_COLLATION = "en-x-icu"
PASSWORD = "s3cret-pw"  # trust authentication ignores it; it must never be shown


def _doctor(db: str) -> None:
    """Quotes, unicode, case and NULLs where the dashboard's ORDER BYs and filters meet them."""
    import duckdb

    con = duckdb.connect(db)
    try:
        servers = [
            r[0]
            for r in con.execute("select distinct server_id from champions order by 1").fetchall()
        ]
        victim = servers[0]
        tables = [
            r[0]
            for r in con.execute(
                "select table_name from duckdb_tables() where schema_name = 'main'"
            ).fetchall()
        ]
        for t in tables:
            cols = {
                r[0]
                for r in con.execute(
                    "select column_name from duckdb_columns() where schema_name = 'main' "
                    "and table_name = ?",
                    [t],
                ).fetchall()
            }
            if "server_id" in cols:
                con.execute(
                    f'update main."{t}" set server_id = ? where server_id = ?', [NASTY_ID, victim]
                )
            if "department" in cols:
                for old, new in DEPARTMENTS.items():
                    con.execute(
                        f'update main."{t}" set department = ? where department = ?', [new, old]
                    )
        # in the renamed departments: the heatmap, lists and filters order them
        other, third = [
            r[0]
            for r in con.execute(
                "select server_id from business_hierarchy where department in (?, ?) and server_id "
                "in (select server_id from champions) order by server_id",
                list(DEPARTMENTS.values()),
            ).fetchall()
        ][:2]
        # exceptions that tie on days_to_breach, one with no peak (NULLS LAST in a DESC order)
        for sid, res, peak, sev, status in (
            (NASTY_ID, "cpu", None, "critical", "new"),
            (other, "memory", 99.0, "critical", "ongoing"),
            (third, "network", 97.0, "warning", "new"),
            (other, "network", 97.0, "warning", "ongoing"),
        ):
            con.execute(
                "insert into risk_exceptions by name select any_value(f.batch) batch, f.server_id, "
                "f.resource, any_value(coalesce(h.department, 'Unassigned')) department, "
                "any_value(coalesce(h.app_manager, 'Unassigned')) app_manager, "
                "min(f.ds) + 30 first_breach_date, 30::bigint days_to_breach, ?::double peak_upper, "
                "96.0 peak_yhat, any_value(f.model) model, any_value(f.champion_mape) champion_mape, "
                "any_value(f.trust) trust, ? severity, 95.0 threshold, ? status, "
                "min(f.ds) - 7 first_flagged from forecasts f left join business_hierarchy h "
                "using (server_id) where f.server_id = ? and f.resource = ? "
                "group by f.server_id, f.resource",
                [peak, sev, status, sid, res],
            )
        for sid, reason in ((other, "forecast fell"), (third, None), (NASTY_ID, None)):
            con.execute(
                "insert into risk_resolved by name select 'batch_00' batch, ? server_id, "
                "'disk' resource, 'ann' department, 'Ann' app_manager, current_date - 7 last_flagged, "
                "current_date resolved_in, ? reason, 95.0 threshold_before, 95.0 threshold_now",
                [sid, reason],
            )
        # sizes in units, and a plan row with no percentage (change_pct desc nulls last)
        con.execute(
            "update capacity_plan set change_units = -9.8, unit = 'Gbps' "
            "where resource = 'network' and action = 'reclaim'"
        )
        con.execute(
            "update capacity_plan set change_pct = null where rowid = "
            "(select min(rowid) from capacity_plan where action = 'reclaim')"
        )
    finally:
        con.close()


def copy_to_postgres(src: str, url: str) -> None:
    """Every main table of the DuckDB file ``src`` into the PostgreSQL database ``url``, types kept
    (through Arrow: dates stay dates, integers with NULLs stay integers), text columns collated by
    an English locale when the server has one."""
    import duckdb

    with duckdb.connect(str(src), read_only=True) as con:
        names = sorted(
            r[0]
            for r in con.execute(
                "select table_name from duckdb_tables() where schema_name = 'main'"
            ).fetchall()
        )
        frames = {
            t: con.sql(f'select * from main."{t}"')
            .to_arrow_table()
            .to_pandas(types_mapper=pd.ArrowDtype)
            for t in names
        }
    conn = postgres.PgConnection(url)
    try:
        postgres.prepare(conn)
        icu = conn.execute(
            "select count(*) from pg_collation where collname = ?", [LOCALE_COLLATION]
        ).fetchone()[0]
    finally:
        conn.close()
    with writing(url) as conn:
        for t, frame in frames.items():
            conn.register("t", frame)
            conn.execute(f'create table main."{t}" as select * from t')
            conn.unregister("t")
            if icu:
                for name, typ in conn.columns("main", t):
                    if typ == "text":
                        conn.execute(
                            f'alter table main."{t}" alter column "{name}" type text '
                            f'collate "{LOCALE_COLLATION}"'
                        )


@pytest.fixture(scope="module")
def stores(track_db, postgres_server, tmp_path_factory) -> dict:
    """The doctored DuckDB file and the same tables in PostgreSQL, as the dashboard opens them."""
    duck = copy_db(track_db["db"], tmp_path_factory.mktemp("pg_parity") / "cap.duckdb")
    _doctor(duck)
    url = postgres_server.create_database("dashboard_parity")
    copy_to_postgres(duck, url)
    return {"duck": Database(duck, 30), "pg": Database(url, 30), "url": url}


def _kind(col: pd.Series) -> str:
    """What a column holds, as far as a view cares: DuckDB's and PostgreSQL's frames may differ in
    width (int32/Int64, datetime ns/us) but not in kind."""
    if col.isna().all():
        return "null"
    if pd.api.types.is_bool_dtype(col):
        return "bool"
    if pd.api.types.is_numeric_dtype(col):
        return "number"
    if pd.api.types.is_datetime64_any_dtype(col):
        return "datetime"
    return "text"


def assert_same(duck, pg, what: str) -> None:
    if isinstance(duck, pd.DataFrame):
        assert isinstance(pg, pd.DataFrame), what
        assert list(pg.columns) == list(duck.columns), what
        assert len(pg) == len(duck), f"{what}: {len(pg)} rows on PostgreSQL, {len(duck)} on DuckDB"
        for c in duck.columns:
            assert _kind(pg[c]) == _kind(duck[c]), (
                f"{what}.{c}: {pg[c].dtype} on PostgreSQL, {duck[c].dtype} on DuckDB"
            )
        pd.testing.assert_frame_equal(
            pg.reset_index(drop=True),
            duck.reset_index(drop=True),
            check_dtype=False,
            check_exact=False,
            rtol=1e-9,
            atol=1e-9,
            obj=what,
        )
    elif dataclasses.is_dataclass(duck):
        for f in dataclasses.fields(duck):
            assert_same(getattr(duck, f.name), getattr(pg, f.name), f"{what}.{f.name}")
    elif isinstance(duck, float) and isinstance(pg, float):
        assert pg == pytest.approx(duck, rel=1e-9, abs=1e-9), what
    else:
        assert pg == duck, what


def _read(fn, db: Database, *args):
    """A data function itself, past st.cache_data: the SQL is what is compared."""
    return fn.__wrapped__(db, data.version(db), *args)


def test_every_data_function_returns_the_same_on_postgres(stores):
    duck, pg = stores["duck"], stores["pg"]
    present = frozenset(_read(data.tables, duck))
    assert _read(data.tables, pg) == present
    assert {"risk_calls", "forecast_accuracy", "risk_resolved", "capacity_plan"} <= present

    calls: list[tuple] = [(data.run_settings,), (data.most_urgent_server,), (data.plan_totals,)]
    calls += [(data.columns, t) for t in sorted(present)]
    calls += [(data.overview, *flags) for flags in ((True, True, True), (False, False, False))]
    calls += [(data.track_record, present, s) for s in (True, False)]
    calls += [(data.changes, s, r) for s in (True, False) for r in (True, False)]
    calls += [
        (data.tournament, warn, h, *bins)
        for warn in (0.0, 5.0)
        for h in (True, False)
        for bins in ((), (0.5, 10.0))
    ]
    servers = _read(data.servers, duck, "", True)
    assert NASTY_ID in servers
    for search in ("", "O'BRIEN\"; DROP", "ünïcødé", "-prd-", "no such server"):
        calls += [(data.servers, search, s) for s in (True, False)]
    for server in [*servers, "no such server"]:
        calls.append((data.server_detail, server, present))
    calls.append((data.server_detail, servers[0], frozenset({"forecasts"})))  # an older database
    departments = [data.ALL, *sorted(set(_read(data.risk_heatmap, duck, data.ALL)["department"]))]
    assert set(DEPARTMENTS.values()) & set(departments), departments
    for severity in (data.ALL, "critical", "warning"):
        calls.append((data.risk_heatmap, severity))
        for dept in departments:
            calls.append((data.risk_managers, severity, dept))
            for manager in [data.ALL, *_read(data.risk_managers, duck, severity, dept)]:
                calls.append((data.risk_list, severity, dept, manager))
    for dept in [data.ALL, *sorted(set(_read(data.plan_totals, duck)["department"]))]:
        calls += [(data.plan_list, dept, action) for action in (data.ALL, "add", "reclaim")]
    vintages = _read(data.track_record, duck, present, True).calls["vintage"]
    assert len(vintages) >= 2
    calls += [(data.risk_calls_by_department, None)]
    calls += [(data.risk_calls_by_department, f"{pd.Timestamp(v):%Y-%m-%d}") for v in vintages]

    for fn, *args in calls:
        what = f"{fn.__name__}{tuple(args)!r}"[:300]
        assert_same(_read(fn, duck, *args), _read(fn, pg, *args), what)
    # the doctored rows are there to be compared, not an empty list on both sides: two critical
    # series 30 days out, the one without a peak after the other (PostgreSQL's DESC puts NULLs first)
    urgent = _read(data.risk_list, pg, data.ALL, data.ALL, data.ALL)
    assert len(urgent) >= 5 and list(urgent["days_to_breach"][:2]) == [30, 30], urgent
    assert urgent["server_id"].iloc[1] == NASTY_ID and pd.isna(urgent["peak_upper"].iloc[1])
    assert _read(data.servers, pg, "O'BRIEN\"; DROP", True) == [NASTY_ID]
    assert sorted(_read(data.track_record, pg, present, True).resolved["reason"]) == [
        "forecast fell",
        "unknown",
    ]


def test_version_on_postgres_changes_when_a_batch_is_published(stores, postgres_server):
    """No ledger yet: None, the 'no data yet' page; then a new version for each publish, dropped
    batch and hierarchy replacement, and the same version while nothing is written."""
    empty = Database(postgres_server.create_database("dashboard_empty"))
    assert data.version(empty) is None
    conn = postgres.PgConnection(empty.url)
    try:
        postgres.prepare(conn)
    finally:
        conn.close()
    assert data.version(empty) is None  # schemas and functions, no table

    url = postgres_server.create_database("dashboard_version")
    copy_to_postgres(stores["duck"], url)
    db = Database(url, 5)
    first = data.version(db)
    assert first is not None and data.version(db) == first
    with writing(url) as w:
        w.execute(
            "insert into main.batch_ledger (batch, published_at) "
            "select 'batch_99', max(published_at) + interval '1 hour' from main.batch_ledger"
        )
    published = data.version(db)
    assert published != first
    with writing(url) as w:
        w.execute("delete from main.batch_ledger where batch = 'batch_00'")
    dropped = data.version(db)
    assert dropped not in (first, published)
    with writing(url) as w:
        w.execute("drop table main.business_hierarchy")
        w.execute("create table main.business_hierarchy (server_id text, department text)")
    assert data.version(db) not in (first, published, dropped)


def test_a_table_being_replaced_shows_the_last_data_not_a_wait(
    stores, postgres_server, monkeypatch
):
    """A writer replacing the hierarchy (drop and create, one transaction) holds it: a view waits at
    most CAPACITY_DASHBOARD_LOCK_TIMEOUT and shows what it loaded last."""
    url = postgres_server.create_database("dashboard_busy")
    copy_to_postgres(stores["duck"], url)
    at = app(url, monkeypatch, CAPACITY_DASHBOARD_LOCK_TIMEOUT=0.5)
    at = open_view(at.run(), "Tournament summary")
    assert not at.exception, at.exception
    before = [f["data"] for f in figures(at)]
    with writing(url) as w:  # a batch published: a new version, so the views ask again
        w.execute("insert into main.batch_ledger (batch, published_at) values ('b', now())")
    writer = postgres.PgConnection(url)
    try:
        writer.execute("begin")
        writer.execute("lock table main.business_hierarchy in access exclusive mode")
        started = time.monotonic()
        at.run()
        assert time.monotonic() - started < 30
        assert not at.exception, at.exception
        assert "pipeline is refreshing the data; showing the last loaded data" in texts(at)
        assert [f["data"] for f in figures(at)] == before
    finally:
        writer.execute("rollback")
        writer.close()


def test_every_view_renders_on_postgres_and_never_shows_the_password(stores, monkeypatch):
    """The dashboard given a URL with a password: each view renders what DuckDB's does, and no text
    on any page (the header names the database) carries the password."""
    url = stores["url"].replace("//postgres@", f"//postgres:{PASSWORD}@", 1)
    assert url != stores["url"]
    duck = app(stores["duck"], monkeypatch).run()
    pg = app(url, monkeypatch).run()
    for view in VIEWS:
        duck, pg = open_view(duck, view), open_view(pg, view)
        assert not pg.exception, (view, pg.exception)
        shown = texts(pg)
        assert PASSWORD not in shown and "postgres:***@" in shown, (view, shown)
        assert len(figures(pg)) == len(figures(duck)), view
    assert heatmap_cells(figures(open_view(pg, VIEWS[0]))[0]) == heatmap_cells(
        figures(open_view(duck, VIEWS[0]))[0]
    )


def test_a_postgres_database_without_batches_explains_how_to_get_data(postgres_server, monkeypatch):
    url = postgres_server.create_database("dashboard_nothing")
    at = app(url, monkeypatch).run()
    assert not at.exception, at.exception
    assert "capacity demo" in texts(at) and "No batch has been published" in texts(at)
    with reading(url) as conn:
        assert table_names(conn, "main") == set(), "a reader must not create tables"


def test_an_unreachable_postgres_is_named_without_its_password(monkeypatch):
    from capacity_assets_tests.servers import free_port

    at = app(f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/x", monkeypatch).run()
    assert not at.exception, at.exception
    shown = texts(at)
    assert "cannot connect to postgresql://postgres:***@127.0.0.1" in shown, shown
    assert PASSWORD not in shown
