"""The batch ledger's rules on hand-made rows: what is unchanged, what is stale, which settings were
used; and reading it back from either store."""

import json

import pandas as pd

from capacity_assets.schema import BATCH_LEDGER
from capacity_assets.store import ledger, staging
from capacity_assets.store.db import writing

NOW = pd.Timestamp("2026-11-26 12:00")


def book(rows):
    return pd.DataFrame([{c: None for c in BATCH_LEDGER} | r for r in rows])


def test_unchanged_means_the_published_fingerprint_equals_todays():
    b = book([{"batch": "b0", "fingerprint": "x"}, {"batch": "b1", "fingerprint": "y"}])
    assert ledger.unchanged(b, {"b0": "x", "b1": "changed", "b2": "z"}) == {"b0"}


def test_stale_names_old_and_never_published_batches():
    b = book(
        [
            {"batch": "b0", "published_at": NOW - pd.Timedelta(days=1)},
            {"batch": "b1", "published_at": NOW - pd.Timedelta(days=20)},
        ]
    )
    stale = ledger.stale(b, ["b0", "b1", "b2"], NOW)
    assert set(stale) == {"b1", "b2"}
    assert stale["b2"] == "never published" and "20 days ago" in stale["b1"]


def test_run_settings_agree_or_list_every_value():
    b = book(
        [
            {"batch": "b0", "settings": json.dumps({"threshold": 90.0, "risk_days": 90})},
            {"batch": "b1", "settings": json.dumps({"threshold": 95.0, "risk_days": 90})},
        ]
    )
    assert ledger.run_settings(b) == {"threshold": [90.0, 95.0], "risk_days": 90}


def test_hierarchy_version_follows_content_not_order():
    h = pd.DataFrame({"server_id": ["a", "b"], "department": ["X", "Y"], "app_manager": ["m", "n"]})
    same = h.iloc[::-1][["app_manager", "server_id", "department"]]
    assert ledger.hierarchy_version(h) == ledger.hierarchy_version(same)
    moved = h.assign(department=["X", "Z"])
    assert ledger.hierarchy_version(h) != ledger.hierarchy_version(moved)


def test_the_ledger_reads_back_as_published_from_either_store(store):
    """Skipping, freshness and the run summary read the ledger through ``ledger.read``: before the
    first publication it is empty but typed, and a published row comes back with the contract's
    types from DuckDB and PostgreSQL alike."""
    empty = ledger.read(store)
    assert empty.empty and list(empty.columns) == list(BATCH_LEDGER)
    row = ledger.ledger_row(
        "b0",
        "r1",
        "fp",
        pd.DataFrame({"server_id": ["s", "s", "t"], "resource": ["cpu", "cpu", "cpu"]}),
        {"threshold": 95.0},
        "v1",
        pd.DataFrame({"server_id": ["s"], "department": ["D"], "app_manager": ["m"]}),
        NOW,
    )
    with writing(store, ["b0"]) as conn:  # as the IO manager publishes a batch
        conn.register("obj", row)
        conn.execute("create table if not exists main.batch_ledger as select * from obj limit 0")
        staging.stage(conn, "batch_ledger", "select * from obj", "r1", ["b0"])
        conn.unregister("obj")
        staging.publish(conn, "r1", "b0")
    # fetched as the store's readers fetch (text as objects), the values exactly as published
    pd.testing.assert_frame_equal(ledger.read(store), row, check_dtype=False)
    assert ledger.stale(ledger.read(store), ["b0", "b1"], NOW) == {"b1": "never published"}
