"""Reading and cleaning hand-made inputs: daily aggregation, gaps, duplicates, time zones."""

import duckdb
import pandas as pd
import pytest

from capacity_assets.inputs import cleaning, files


def write_csv(path, rows, header="server_id,resource,timestamp,utilization_pct"):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return str(path)


def daily_of(path, servers=("a", "b"), agg="mean"):
    conn = duckdb.connect()
    sources = files.inspect_metrics(conn, path)
    return files.read_daily(conn, sources, list(servers), agg)


@pytest.mark.parametrize("agg,expected", [("mean", 30.0), ("max", 50.0), ("p95", 48.0)])
def test_sub_daily_samples_become_one_value_per_day(tmp_path, agg, expected):
    rows = [
        ("a", "cpu", f"2024-01-01T{h:02d}:00:00", v)
        for h, v in [(0, 10), (6, 20), (12, 40), (18, 50), (23, 30)]
    ]
    daily, stats = daily_of(write_csv(tmp_path / "m.csv", rows), agg=agg)
    assert len(daily) == 1 and stats.rows_in == 5
    assert daily["y"].iloc[0] == pytest.approx(expected)


def test_five_minute_data_rows_in_any_order(tmp_path):
    ts = pd.date_range("2024-01-01", periods=3 * 288, freq="5min")
    rows = [("a", "memory", t.isoformat(), 40 + (i % 288) / 288 * 10) for i, t in enumerate(ts)][
        ::-1
    ]
    daily, _ = daily_of(write_csv(tmp_path / "m.csv", rows))
    assert list(daily["ds"]) == list(pd.date_range("2024-01-01", periods=3))
    assert daily["y"].between(44, 46).all()


def test_gaps_are_filled_on_a_complete_calendar_and_flagged(tmp_path):
    rows = [
        ("a", "disk", "2024-01-01", 10),
        ("a", "disk", "2024-01-05", 50),
        ("b", "cpu", "2024-01-02", 5),
    ]
    daily, _ = daily_of(write_csv(tmp_path / "m.csv", rows))
    full, stats = cleaning.complete_calendar(daily)
    a = full[full["server_id"] == "a"]
    assert list(a["y"]) == [10, 20, 30, 40, 50]
    assert list(a["filled"]) == [False, True, True, True, False]
    assert stats == {"series": 2, "days_filled": 3, "long_gaps": 0, "long_gap_example": ""}


def test_duplicates_offsets_and_out_of_range_values_are_handled_and_counted(tmp_path):
    rows = [
        ("a", "cpu", "2024-01-01T23:30:00-02:00", 80),  # 01:30 UTC on Jan 2
        ("a", "cpu", "2024-01-02T12:00:00Z", 60),
        ("a", "cpu", "2024-01-02T12:00:00Z", 60),  # exact duplicate
        ("a", "CPU", "2024-01-03", 130),  # upper case resource, clipped value
        ("a", "cpu", "2024-01-04", -5),
    ]
    daily, stats = daily_of(write_csv(tmp_path / "m.csv", rows))
    assert list(daily["ds"].dt.day) == [2, 3, 4]
    assert list(daily["y"]) == [70.0, 100.0, 0.0]
    assert stats.duplicates == 1 and stats.clipped == 2


def test_only_the_requested_servers_are_read(tmp_path):
    rows = [
        ("a", "cpu", "2024-01-01", 1),
        ("b", "cpu", "2024-01-01", 2),
        ("c", "cpu", "2024-01-01", 3),
    ]
    daily, stats = daily_of(write_csv(tmp_path / "m.csv", rows), servers=["b"])
    assert list(daily["server_id"]) == ["b"] and stats.rows_in == 1


def test_short_series_are_listed_with_a_reason_not_dropped():
    days = pd.date_range("2024-01-01", periods=400)
    processed = pd.DataFrame(
        {
            "batch": "batch_00",
            "server_id": ["long"] * 400 + ["short"] * 20,
            "resource": "cpu",
            "ds": list(days) + list(days[:20]),
            "y": 1.0,
            "filled": False,
        }
    )
    skipped = cleaning.short_series(processed, min_days=304)
    assert list(skipped["server_id"]) == ["short"]
    assert (
        skipped["days"].iloc[0] == 20 and "shorter than the 304 days" in skipped["reason"].iloc[0]
    )


def test_an_export_in_fractions_is_scaled_whole_and_idle_network_alone_is_not(tmp_path):
    """A per-resource export in fractions 0–1 has network-only files, whose values prove nothing
    alone: they were left at 1/100 of their value, so a saturated link could never be flagged."""
    days = [f"2024-01-{d:02d}" for d in range(1, 6)]
    folder = tmp_path / "fractions"
    folder.mkdir()
    for resource, level in {"cpu": 0.6, "memory": 0.7, "disk": 0.5, "network": 0.97}.items():
        write_csv(folder / f"a_{resource}.csv", [("a", resource, d, level) for d in days])
    daily, _ = daily_of(str(folder / "*.csv"), servers=("a",))
    assert daily.groupby("resource")["y"].max().round(6).to_dict() == {
        "cpu": 60.0,
        "memory": 70.0,
        "disk": 50.0,
        "network": 97.0,
    }
    # the same network file next to an export in percent: a quiet link, kept as it is
    percent = tmp_path / "percent"
    percent.mkdir()
    write_csv(percent / "a_cpu.csv", [("a", "cpu", d, 60) for d in days])
    write_csv(percent / "a_network.csv", [("a", "network", d, 0.97) for d in days])
    daily, _ = daily_of(str(percent / "*.csv"), servers=("a",))
    assert daily.groupby("resource")["y"].max().round(6).to_dict() == {"cpu": 60.0, "network": 0.97}


def test_utc_offsets_are_counted_only_after_a_time_of_day_and_a_spaced_offset_is_read(tmp_path):
    """A plain date's '-31' was counted as a UTC offset, so an export mixing dates and naive times
    never got the mixed-time-zone warning; '14:00:00 +02:00' (a space before the offset) was dropped."""
    rows = [
        ("a", "cpu", "2024-01-31", 10),  # a date: naive
        ("a", "cpu", "2024-02-01 23:00:00", 20),  # naive
        ("a", "cpu", "2024-02-02 14:00:00 +02:00", 30),  # 12:00 UTC
        ("a", "cpu", "2024-02-03 01:00:00.250 +0200", 40),  # 23:00 UTC on Feb 2
        ("a", "cpu", "2024-02-04T10:00:00Z", 50),
        ("a", "cpu", "2024-02-05 01:00 +02:00", 60),  # no seconds: 23:00 UTC on Feb 4
        ("a", "cpu", "2024-02-06T12:00:00 -01:00", 70),
        ("a", "cpu", "2024-02-07 12:00:00 UTC", 80),
    ]
    daily, stats = daily_of(write_csv(tmp_path / "m.csv", rows), servers=("a",))
    assert stats.bad_timestamp == 0
    assert (stats.utc_offset_rows, stats.naive_time_rows) == (6, 2)
    assert daily.set_index(daily["ds"].dt.strftime("%m-%d"))["y"].to_dict() == {
        "01-31": 10.0,
        "02-01": 20.0,
        "02-02": 35.0,
        "02-04": 55.0,
        "02-06": 70.0,
        "02-07": 80.0,
    }


def test_a_long_gap_is_counted_with_its_first_example():
    """A gap over a week is an outage or a missing export: the run names the first one."""
    days = pd.date_range("2024-01-01", periods=40, freq="D")
    keep = (days < "2024-01-05") | (days > "2024-01-20")  # 16 days missing from Jan 5
    daily = pd.DataFrame({"server_id": "a", "resource": "disk", "ds": days[keep], "y": 50.0})
    _, stats = cleaning.complete_calendar(daily)
    assert (
        stats["long_gaps"] == 1 and stats["long_gap_example"] == "a/disk: 16 days from 2024-01-05"
    )


def test_a_hierarchy_not_in_utf8_past_the_sniffed_start_is_named_with_its_line(tmp_path):
    """DuckDB sniffs a file's start only: an accented name saved in a Windows code page further down
    escaped the check and ended the command with DuckDB's own traceback."""
    rows = "".join(f"web-{i:05d},Ops,Ann\n" for i in range(60000))
    path = tmp_path / "owners.csv"
    path.write_bytes(
        b"server_id,department,app_manager\n"
        + rows.encode()
        + "web-x,Caf\xe9,Ren\xe9e\n".encode("cp1252")
    )
    with pytest.raises(
        files.InputError,
        match=r"owners.csv: is not UTF-8 text \(line 60002: .*save it as 'CSV UTF-8'",
    ):
        files.read_table(duckdb.connect(), str(path), files.HIERARCHY_COLUMNS, "CAPACITY_HIERARCHY")
