"""Progress on long work (issue 24): `capacity run` shows on a terminal a live display of every run's
step and batches, the totals and the time left; in a log it writes plain lines, never a control
character. The displays are unit-tested on a fake clock, then a real run goes through a
pseudo-terminal and a real `capacity demo --weeks 1` through a pipe."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

import pandas as pd
from rich.console import Console

from capacity_assets.cli.progress import LiveProgress, PlainProgress, week_label
from capacity_assets.pipeline.runner import BatchResult
from capacity_assets_tests.conftest import BIN, TINY, capacity

STEPS = ["processed_data", "prophet_results", "forecasts", "batch_ledger"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _two_ranges(shown, clock):
    """Two runs: batch_00..batch_01 (10 servers) into prophet_results, batch_02 (5) not started."""
    shown.planned(
        [["batch_00", "batch_01"], ["batch_02"]], {"batch_00": 6, "batch_01": 4, "batch_02": 5}
    )
    shown.steps("batch_00", STEPS)
    shown.step("batch_00", "processed_data")
    shown.series("batch_00", 37)
    clock.now += 10
    shown.step("batch_00", "prophet_results")
    shown.batch("batch_00", 1, 2)


def test_a_run_whose_steps_run_elsewhere_shows_as_running_from_its_start():
    """Under the multiprocess or Dask executor a run's steps are in other processes: the runner's
    "started" is all the display hears until the run ends, and it must show the run running."""
    clock, out = FakeClock(), io.StringIO()
    shown = PlainProgress(out, clock=clock, ticker=False)
    shown.planned([["batch_00"], ["batch_01"]], {"batch_00": 3, "batch_01": 3})
    shown.started("batch_00")
    clock.now += 30
    shown.tick()
    status = out.getvalue().splitlines()[-1]
    assert "| batch_00 running" in status and "batch_01" not in status.split("|", 1)[1]


def test_a_log_gets_a_status_line_after_30_quiet_seconds_and_never_a_control_character():
    clock, out = FakeClock(), io.StringIO()
    shown = PlainProgress(out, title="week 2 of 3 (2026-10-05)", clock=clock, ticker=False)
    _two_ranges(shown, clock)
    first = out.getvalue()
    assert first.splitlines() == [
        "progress: week 2 of 3 (2026-10-05): 3 batches in 2 runs, 15 servers; a line per finished "
        "run and a status line at least every 30s"
    ]
    clock.now += 19  # 29 s since the last line: nothing yet
    shown.tick()
    assert out.getvalue() == first
    clock.now += 1
    shown.tick()
    status = out.getvalue()[len(first) :]
    # 37 series counted in the first run, the other's 5 servers x 4 resources guessed
    assert status.startswith(
        "progress: week 2 of 3 (2026-10-05): 0/3 batches, 0/~57 series done; 0:30 elapsed, about "
    )
    assert "| batch_00..batch_01 prophet_results (step 2 of 4), batch 2 of 2" in status
    assert "batch_02" not in status.split("|")[1]  # not started: not shown as running
    shown.echo("[2/3] batch_00..batch_01: ok in 40.0s (elapsed 40s)")  # the runner's line
    clock.now += 29
    shown.tick()  # a line was written 29 s ago: no status line
    assert out.getvalue().count("progress:") == 2
    shown.finished([BatchResult("batch_00", True), BatchResult("batch_01", True)])
    shown.batch("batch_00", 2, 2)  # a worker's last news, arriving after its result: ignored
    shown.finished([BatchResult("batch_02", False, error="boom")])
    clock.now += 60
    shown.tick()  # nothing left to do: no more status lines
    text = out.getvalue()
    assert text.count("progress:") == 2
    # the failed run never counted its series: they stay a guess
    assert shown.total_text().startswith("3/3 batches, 57/~57 series done")
    assert "\x1b" not in text and "\r" not in text


def test_the_estimate_of_time_left_weights_the_model_steps():
    """500 servers just into prophet_results after 10 s are not "almost done" because 1 of 4 steps
    is: prophet is most of a series' work, so most of the time is said to be left."""
    clock = FakeClock()
    shown = PlainProgress(io.StringIO(), clock=clock, ticker=False)
    shown.planned([["batch_00"]], {"batch_00": 500})
    shown.steps("batch_00", STEPS)
    shown.step("batch_00", "processed_data")
    clock.now += 10
    shown.step("batch_00", "prophet_results")
    assert shown.totals()["left"] > 5 * 60
    shown.batch("batch_00", 1, 2)
    clock.now += 60  # half of prophet took a minute: about a minute is left
    assert 55 <= shown.totals()["left"] <= 80
    assert shown.totals()["batches_done"] == 0
    shown.finished([BatchResult("batch_00", True)])
    assert shown.totals()["left"] == 0 and shown.totals()["batches_done"] == 1


def test_the_live_display_shows_each_run_its_step_its_batches_and_the_totals():
    clock = FakeClock()
    shown = LiveProgress(
        io.StringIO(), title=week_label(3, 8, pd.Timestamp("2026-10-05")), clock=clock
    )
    try:
        _two_ranges(shown, clock)
        screen = Console(file=io.StringIO(), width=120, color_system=None)
        screen.print(shown.render())
        text = screen.file.getvalue()
    finally:
        shown.close()
    assert "capacity run · week 3 of 8 (2026-10-05)" in text
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("batch_")}
    assert re.search(
        r"0/2 +37 +prophet_results \(step 2 of 4\), batch 2 of 2 +0:10", rows["batch_00..batch_01"]
    )
    assert re.search(r"0/1 +~20 +waiting for a worker", rows["batch_02"])
    assert "0/3 batches, 0/~57 series done; 0:10 elapsed, about" in text


def test_a_replayed_week_is_named_by_its_number_and_monday():
    assert week_label(3, 8, pd.Timestamp("2026-10-05")) == "week 3 of 8 (2026-10-05)"


def _in_a_terminal(
    args: list[str], cwd, env: dict, columns: int = 120, timeout: int = 600
) -> tuple[int, str]:
    """Run `capacity` with a pseudo-terminal as its stdin, stdout and stderr; what it drew, raw."""
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(
        [str(BIN / "capacity"), *args],
        cwd=cwd,
        env={**os.environ, **env, "TERM": "xterm-256color", "COLUMNS": str(columns)},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    drawn, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([main], [], [], 1.0)[0]:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # EIO: every process holding the terminal has exited
                    break
                if not chunk:
                    break
                drawn += chunk
        else:
            proc.kill()
            raise AssertionError(f"capacity {' '.join(args)} still running after {timeout}s")
        return proc.wait(timeout=60), drawn.decode("utf-8", "replace")
    finally:
        os.close(main)


def _env(fleet: dict, work) -> dict:
    return {
        "CAPACITY_METRICS": fleet["metrics"],
        "CAPACITY_HIERARCHY": fleet["hierarchy"],
        "CAPACITY_DB": str(work / "cap.duckdb"),
        "DAGSTER_HOME": str(work / ".dagster"),
    }


def test_on_a_terminal_a_run_draws_a_live_display_of_its_steps_and_batches(tiny_fleet, tmp_path):
    """Two workers (two runs: batch_00..batch_01 and batch_02), so the steps and batches come from
    worker processes to the display; the summary follows the display's last state."""
    code, drawn = _in_a_terminal(["run", "--workers", "2"], tmp_path, _env(tiny_fleet, tmp_path))
    text = ANSI.sub("", drawn).replace("\r", "")
    assert code == 0, text[-3000:]
    assert "\x1b[" in drawn  # drawn in place, not written line by line
    assert "run (batches)" in text and "batch_00..batch_01" in text
    # a frame while the runs were in the models, and the total before and after
    assert re.search(
        r"(prophet|ets|challenger)_results \(step \d+ of \d+\), batch [12] of [12]", text
    )
    assert re.search(r"[0-2]/3 batches, \d+/~?\d+ series done; \d+:\d\d elapsed", text)
    assert re.search(r"3/3 batches, 24/24 series done; \d+:\d\d elapsed, about 0:00 left", text)
    assert "Summary: 3/3 batches run and succeeded" in text
    assert text.index("3/3 batches, 24/24 series done") < text.index("Summary: 3/3 batches")


def test_in_a_log_a_replayed_week_writes_plain_lines_naming_the_week(tmp_path):
    """`capacity demo --weeks 1` through a pipe (cron, CI): the week, the plan, a line per finished
    run of batches and the summary, and not one escape sequence or carriage return."""
    out = capacity(
        "demo",
        *("--servers", str(TINY["servers"]), "--months", str(TINY["months"])),
        *("--weeks", "1", "--out", str(tmp_path / "demo")),
        cwd=tmp_path,
        env={
            "CAPACITY_DB": str(tmp_path / "cap.duckdb"),
            "DAGSTER_HOME": str(tmp_path / ".dagster"),
        },
    ).stdout
    monday = sorted(p.name for p in (tmp_path / "demo" / "weeks").iterdir())[0]
    assert f"progress: week 1 of 1 ({monday}): 3 batches in 1 run, 6 servers" in out
    assert re.search(r"^\[3/3\] batch_00\.\.batch_02: ok in ", out, re.M)
    assert "Summary: 3/3 batches run and succeeded" in out
    assert "\x1b" not in out and "\r" not in out
