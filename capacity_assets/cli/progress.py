"""What `capacity run` shows while it works: a live display on a terminal, plain lines in a log.

A fleet of 2,000 servers takes minutes per range of batches, and a silent command looks hung. The
launcher (``pipeline.runner``) hears from its workers which step each range is in and how many of
its batches that step has done; this module keeps that state and shows it. On a terminal: a table
redrawn in place with ``rich`` (installed with Dagster). Anywhere else (a pipe, CI, cron, a log
file): plain lines, the runner's one per finished range and a status line whenever 30 s pass
without any, never a control character. Pure Python: the clock is a parameter, for tests.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from capacity_assets.schema import RESOURCES

# what a step costs, roughly, to weight the estimate of what is left (a range in prophet_results is
# not one almost done): CPU per series as measured (Prophet 114, ETS 59, challenger 26 ms; the rest
# of 236 ms over a dozen other steps), plus a step's own cost (Dagster, reading and writing tables),
# which is most of a small fleet's time
STEP_MS_PER_SERIES = {"prophet_results": 114.0, "ets_results": 59.0, "challenger_results": 26.0}
OTHER_STEP_MS_PER_SERIES = 3.0
STEP_SECONDS = 2.0
PLAIN_EVERY_S = 30.0  # a log gets a status line at least this often while work goes on


def week_label(week: int, weeks: int, monday) -> str:
    """`capacity demo --weeks`: which replayed week a run is, e.g. "week 3 of 8 (2026-10-05)"."""
    return f"week {week} of {weeks} ({monday:%Y-%m-%d})"


def clock_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class Range:
    """One range of batches (one Dagster run), as its worker last told it."""

    batches: list[str]
    servers: int
    series: int | None = None  # counted once its processed_data step has run
    steps: list[str] = field(default_factory=list)
    step: str = ""
    done: int = 0  # batches the current step has done
    of: int = 0
    started: float | None = None
    ended: float | None = None
    failed: int = 0

    @property
    def label(self) -> str:
        a, b = self.batches[0], self.batches[-1]
        return a if a == b else f"{a}..{b}"

    @property
    def series_or_guess(self) -> tuple[int, bool]:
        """(series, counted): before processed_data runs, every server is taken to have them all."""
        if self.series is not None:
            return self.series, True
        return self.servers * len(RESOURCES), False

    def costs(self, steps: list[str]) -> list[float]:
        """Each of ``steps``' rough cost in seconds for this range's series."""
        series = self.series_or_guess[0]
        return [
            STEP_SECONDS + series * STEP_MS_PER_SERIES.get(s, OTHER_STEP_MS_PER_SERIES) / 1000
            for s in steps
        ]

    def fraction(self) -> float:
        """How much of the range's work is done, each step weighted by its rough cost."""
        if self.ended is not None:
            return 1.0
        if not self.steps or self.step not in self.steps:
            return 0.0
        weights = self.costs(self.steps)
        i = self.steps.index(self.step)
        within = self.done / self.of if self.of else 0.0
        return (sum(weights[:i]) + weights[i] * within) / sum(weights)


class Progress:
    """The state every display shares: what the runner tells (``runner.Watcher``) and the totals.
    Methods are called from the launcher's listening thread as well as its main thread."""

    def __init__(self, title: str = "", clock: Callable[[], float] = time.monotonic):
        self.title = title
        self.clock = clock
        self.began = clock()  # the whole work's start (``started`` is the runner's message)
        self.ranges: dict[str, Range] = {}
        self._lock = threading.Lock()

    # --- what the runner tells ---------------------------------------------------------------------
    def planned(self, ranges: list[list[str]], servers: dict[str, int]) -> None:
        with self._lock:
            self.began = self.clock()
            self.ranges = {
                r[0]: Range(list(r), sum(servers.get(b, 0) for b in r)) for r in ranges if r
            }
        self._changed(planned=True)

    def started(self, first: str) -> None:
        with self._lock:
            self._running(first)
        self._changed()

    def steps(self, first: str, names: list[str]) -> None:
        with self._lock:
            r = self._running(first)
            if r is not None:
                r.steps = list(names)

    def step(self, first: str, name: str) -> None:
        with self._lock:
            r = self._running(first)
            if r is not None:
                r.step, r.done, r.of = name, 0, len(r.batches)
        self._changed()

    def batch(self, first: str, done: int, of: int) -> None:
        with self._lock:
            r = self._running(first)
            if r is not None:
                r.done, r.of = done, of
        self._changed()

    def series(self, first: str, n: int) -> None:
        with self._lock:
            r = self.ranges.get(first)
            if r is not None:
                r.series = n

    def finished(self, results) -> None:
        with self._lock:
            r = self.ranges.get(results[0].batch) if results else None
            if r is not None:
                r.ended = self.clock()
                r.failed = sum(1 for b in results if not b.success)
                if r.started is None:
                    r.started = r.ended
        self._changed()

    def _running(self, first: str) -> Range | None:
        """The range, unless it has ended (a worker's last news can arrive after its result)."""
        r = self.ranges.get(first)
        if r is None or r.ended is not None:
            return None
        if r.started is None:
            r.started = self.clock()
        return r

    # --- what is shown -----------------------------------------------------------------------------
    def totals(self) -> dict:
        """Batches and series done out of the total, elapsed seconds, and an estimate of what is
        left (None until a little work is done): elapsed × undone / done, ranges weighted by size."""
        with self._lock:
            ranges = list(self.ranges.values())
            now = self.clock()
        steps = next((r.steps for r in ranges if r.steps), [])  # every run has the same
        sizes = [sum(r.costs(r.steps or steps)) or 1.0 for r in ranges]
        fraction = (
            sum(s * r.fraction() for s, r in zip(sizes, ranges)) / sum(sizes) if ranges else 0.0
        )
        guessed = [r.series_or_guess for r in ranges]
        left = None
        if ranges and all(r.ended is not None for r in ranges):
            now, left = max(r.ended for r in ranges), 0.0  # the clock stops with the last run
        elapsed = now - self.began
        if left is None and fraction >= 0.01 and elapsed >= 3:
            left = elapsed * (1 - fraction) / fraction
        return {
            "batches_done": sum(len(r.batches) for r in ranges if r.ended is not None),
            "batches": sum(len(r.batches) for r in ranges),
            "series_done": sum(g[0] for g, r in zip(guessed, ranges) if r.ended is not None),
            "series": sum(g[0] for g in guessed),
            "series_counted": all(g[1] for g in guessed),
            "fraction": fraction,
            "elapsed": elapsed,
            "left": left,
        }

    def range_text(self, r: Range) -> str:
        """Where one range is: its step (i of n) and the step's batches done, or how it ended."""
        if r.ended is not None:
            return f"{r.failed} of {len(r.batches)} FAILED" if r.failed else "done"
        if not r.step:
            return "running" if r.started is not None else "waiting for a worker"
        where = (
            f" (step {r.steps.index(r.step) + 1} of {len(r.steps)})" if r.step in r.steps else ""
        )
        return f"{r.step}{where}, batch {min(r.done + 1, r.of)} of {r.of}"

    def total_text(self) -> str:
        t = self.totals()
        series = f"{t['series_done']:,}/{'' if t['series_counted'] else '~'}{t['series']:,}"
        left = "estimating" if t["left"] is None else f"about {clock_text(t['left'])} left"
        return (
            f"{t['batches_done']}/{t['batches']} batches, {series} series done; "
            f"{clock_text(t['elapsed'])} elapsed, {left}"
        )

    # --- how it is shown (the two displays) --------------------------------------------------------
    def echo(self, text: str) -> None:
        raise NotImplementedError

    def _changed(self, planned: bool = False) -> None:
        """Called after each piece of news, outside the lock."""

    def close(self) -> None:
        """Stop showing: the last state stays on screen (a terminal) or in the log."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PlainProgress(Progress):
    """For a pipe, CI, cron or a log file: whole lines only, and one at least every ``every`` s."""

    def __init__(
        self,
        stream,
        title: str = "",
        clock: Callable[[], float] = time.monotonic,
        every: float = PLAIN_EVERY_S,
        ticker: bool = True,
    ):
        super().__init__(title, clock)
        self.stream, self.every = stream, every
        self._write_lock = threading.Lock()
        self._last_line = clock()
        self._stop = threading.Event()
        self._ticker = (
            threading.Thread(target=self._tick_every_second, daemon=True) if ticker else None
        )

    def echo(self, text: str) -> None:
        with self._write_lock:
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last_line = self.clock()

    def _changed(self, planned: bool = False) -> None:
        if planned:
            n = len(self.ranges)
            servers = sum(r.servers for r in self.ranges.values())
            self.echo(
                f"progress: {self.title + ': ' if self.title else ''}"
                f"{sum(len(r.batches) for r in self.ranges.values())} batches in {n} "
                f"run{'s' if n != 1 else ''}, {servers:,} servers; a line per finished run and "
                f"a status line at least every {self.every:.0f}s"
            )
            if self._ticker is not None and not self._ticker.is_alive():
                self._ticker.start()

    def status_line(self) -> str:
        with self._lock:
            running = [r for r in self.ranges.values() if r.ended is None and r.started is not None]
        where = "; ".join(f"{r.label} {self.range_text(r)}" for r in running)
        return f"progress: {self.title + ': ' if self.title else ''}{self.total_text()}" + (
            f" | {where}" if where else ""
        )

    def tick(self) -> None:
        """A status line if nothing was written for ``every`` seconds while work goes on."""
        with self._lock:
            working = any(r.ended is None for r in self.ranges.values())
        if working and self.clock() - self._last_line >= self.every:
            self.echo(self.status_line())

    def _tick_every_second(self) -> None:
        while not self._stop.wait(1.0):
            self.tick()

    def close(self) -> None:
        self._stop.set()


class LiveProgress(Progress):
    """For a terminal: every range's step and batches, and a total with a bar and the time left,
    redrawn twice a second in place; lines echoed meanwhile scroll above it."""

    def __init__(self, stream, title: str = "", clock: Callable[[], float] = time.monotonic):
        from rich.console import Console

        super().__init__(title, clock)
        self.console = Console(file=stream, highlight=False)
        self._live = None

    def echo(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _changed(self, planned: bool = False) -> None:
        if planned and self._live is None:
            from rich.live import Live

            self._live = Live(
                console=self.console,
                get_renderable=self.render,
                refresh_per_second=2,
                redirect_stdout=True,
                redirect_stderr=True,
            )
            self._live.start()

    def render(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            ranges = list(self.ranges.values())
            now = self.clock()
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        table.add_column("run (batches)")
        table.add_column("batches", justify="right")
        table.add_column("series", justify="right")
        table.add_column("step")
        table.add_column("time", justify="right")
        for r in ranges:
            n, counted = r.series_or_guess
            done = len(r.batches) if r.ended is not None else 0
            table.add_row(
                r.label,
                f"{done}/{len(r.batches)}",
                f"{n:,}" if counted else f"~{n:,}",
                Text(self.range_text(r), style="red" if r.failed else ""),
                clock_text((r.ended or now) - r.started) if r.started is not None else "",
            )
        t = self.totals()
        bar = ProgressBar(total=1.0, completed=t["fraction"], width=30)
        total = Table.grid(padding=(0, 1))
        total.add_row(bar, Text(self.total_text(), style="bold"))
        head = Text(f"capacity run{' · ' + self.title if self.title else ''}", style="bold")
        return Group(head, table, total)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def for_stream(stream=None, title: str = "") -> Progress:
    """The live display on a terminal, plain lines anywhere else (a dumb terminal included)."""
    stream = stream if stream is not None else sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream: plain
        tty = False
    if tty and os.environ.get("TERM", "") != "dumb":
        return LiveProgress(stream, title)
    return PlainProgress(stream, title)
