"""The batch ledger's rules on hand-made rows: what is unchanged, what is stale, which settings were used."""

import json

import pandas as pd

from capacity_assets.schema import BATCH_LEDGER
from capacity_assets.store import ledger

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
