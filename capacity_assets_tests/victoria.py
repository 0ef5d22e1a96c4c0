"""A real VictoriaMetrics for tests, and node-exporter-shaped data whose daily values are known.

The Prometheus source is tested against a real server rather than a fake, because what matters
(subquery semantics, day boundaries, error bodies, basic auth) is exactly what a fake would get
wrong. VictoriaMetrics is one static binary (Debian package ``victoria-metrics``) that starts in a
fraction of a second and accepts back-dated samples, so a year of history is a single import.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import requests

BINARY = "victoria-metrics"
INSTALL_HINT = (
    "install it with `apt-get install -y victoria-metrics` (Debian/Ubuntu; .ci/run does this) "
    "or put the binary from https://github.com/VictoriaMetrics/VictoriaMetrics/releases on PATH"
)

CPU = "instance:node_cpu_utilisation:rate5m"
MEMORY = "instance:node_memory_utilisation:ratio"
RX = "instance:node_network_receive_bytes_excluding_lo:rate5m"
TX = "instance:node_network_transmit_bytes_excluding_lo:rate5m"
LINK_SPEED = 125_000_000  # bytes/s of a 1 Gbit/s NIC, as node_network_speed_bytes reports it


def binary() -> str:
    """The server's path, or a failure that says how to install it: a missing server must not pass as a skip."""
    path = shutil.which(BINARY)
    if path is None:
        raise RuntimeError(
            f"{BINARY} is not on PATH: the Prometheus-source tests need a real server; {INSTALL_HINT}"
        )
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VictoriaMetrics:
    """One VictoriaMetrics process on a free loopback port with its own temporary storage.

    Use as a context manager; the process and its storage are removed on exit. With ``username``
    and ``password`` every endpoint requires that basic auth (the helper's own calls send it).
    """

    def __init__(
        self, username: str | None = None, password: str | None = None, start_timeout: float = 30.0
    ):
        self.username, self.password = username, password
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._tmp: tempfile.TemporaryDirectory | None = None

    @property
    def url(self) -> str:
        """The plain HTTP base URL (what goes after ``prometheus+``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """The value a user would give as CAPACITY_METRICS."""
        return f"prometheus+{self.url}"

    def _auth(self):
        return (self.username, self.password) if self.username else None

    def __enter__(self) -> VictoriaMetrics:
        exe = binary()
        self._tmp = tempfile.TemporaryDirectory(prefix="victoria-")
        try:
            for _ in range(3):  # the free port can be taken between probing and binding
                if self._start(exe):
                    return self
            raise RuntimeError(
                f"{BINARY} did not start on a free port after 3 attempts: {self._log_tail()}"
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def _start(self, exe: str) -> bool:
        self.port = _free_port()
        args = [
            exe,
            f"-storageDataPath={self._tmp.name}/data",
            "-retentionPeriod=100y",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-loggerLevel=ERROR",
        ]
        if self.username:
            args += [f"-httpAuth.username={self.username}", f"-httpAuth.password={self.password}"]
        log = open(Path(self._tmp.name) / "victoria.log", "ab")
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "address already in use" in self._log_tail():
                    return False
                raise RuntimeError(
                    f"{BINARY} exited with code {self.proc.returncode}: {self._log_tail()}"
                )
            try:
                if (
                    requests.get(f"{self.url}/health", auth=self._auth(), timeout=1).status_code
                    == 200
                ):
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(
            f"{BINARY} did not answer /health within {self.start_timeout:.0f} s: {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            return (Path(self._tmp.name) / "victoria.log").read_text(errors="replace")[
                -2000:
            ].strip() or "(no output)"
        except OSError:
            return "(no log)"

    def import_prometheus(self, text: str, chunk_bytes: int = 8 << 20) -> None:
        """Import Prometheus text lines (``name{labels} value timestamp_ms``) and make them searchable now."""
        data = text.encode()
        pos = 0
        while pos < len(data):
            cut = (
                data.rfind(b"\n", pos, pos + chunk_bytes) + 1
                if pos + chunk_bytes < len(data)
                else len(data)
            )
            if cut <= pos:
                cut = len(data)
            r = requests.post(
                f"{self.url}/api/v1/import/prometheus",
                data=data[pos:cut],
                auth=self._auth(),
                timeout=120,
            )
            if r.status_code != 204:
                raise RuntimeError(
                    f"import into {self.url} failed: HTTP {r.status_code} {r.text[:500]}"
                )
            pos = cut
        requests.get(
            f"{self.url}/internal/force_flush", auth=self._auth(), timeout=60
        ).raise_for_status()
        # back-filled samples can land in ranges already answered from VictoriaMetrics' result cache
        requests.get(f"{self.url}/internal/resetRollupResultCache", auth=self._auth(), timeout=60)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class Samples(NamedTuple):
    text: str  # Prometheus text lines with millisecond timestamps, ready for import_prometheus
    expected: pd.DataFrame  # server_id, resource, timestamp (day), mean, max, p95, in percent
    raw: (
        pd.DataFrame
    )  # server_id, resource, time, pct: the per-sample utilisation the expectations come from


def node_exporter_samples(servers, start, days: int, seed: int = 0, interval: int = 300) -> Samples:
    """Node-exporter-shaped series for ``servers`` over ``days`` days from ``start``, and their true daily values.

    Samples fall every ``interval`` seconds, half an interval past the grid (hh:02:30, hh:07:30 … at
    5 minutes), so no sample sits on a midnight and each point of a 5-minute subquery sees exactly
    one fresh sample: the server's daily aggregates then equal these exact per-sample figures. Each
    server has the cpu and memory recording rules (ratios 0–1), a root ext4 filesystem plus a /run
    tmpfs that is 97 % full (the disk query must exclude it), the receive/transmit recording rules
    and a 1 Gbit/s ``node_network_speed_bytes`` for eth0.
    """
    rng = np.random.default_rng(seed)
    t0 = int(pd.Timestamp(start).tz_localize(None).normalize().value // 10**9)
    n = days * 86400 // interval
    ts = t0 + interval // 2 + np.arange(n, dtype=np.int64) * interval
    day = (ts - t0) // 86400
    hour = ((ts - t0) % 86400) / 3600.0
    weekday = (day + pd.Timestamp(t0, unit="s").dayofweek) % 7
    daily = np.sin(2 * np.pi * (hour - 9) / 24)
    busy = np.where(weekday < 5, 1.0, 0.6)
    lines: list[str] = []
    raw: list[pd.DataFrame] = []
    ts_ms = list(map(str, (ts * 1000).tolist()))

    def emit(name: str, labels: str, values) -> None:
        prefix = f"{name}{{{labels}}} "
        # repr is the shortest text that parses back to the same float64, so server and Python agree
        text = [repr(values)] * n if np.isscalar(values) else list(map(repr, values.tolist()))
        lines.extend(map(prefix.__add__, map(" ".join, zip(text, ts_ms))))

    for _i, server in enumerate(servers):
        labels = f'instance="{server}",job="node"'
        r = lambda lo, hi: rng.uniform(lo, hi)  # noqa: E731
        cpu = np.round(
            np.clip(
                r(0.2, 0.4)
                + 0.25 * day / max(days, 1)
                + 0.12 * busy * daily
                + rng.normal(0, 0.04, n),
                0.005,
                0.995,
            ),
            9,
        )
        memory = np.round(
            np.clip(
                r(0.4, 0.6) + 0.1 * day / max(days, 1) + 0.03 * daily + rng.normal(0, 0.01, n),
                0.01,
                0.99,
            ),
            9,
        )
        root_size = int(r(80, 500) * 1e9)
        used = np.clip(
            r(0.3, 0.5) + r(0.1, 0.3) * day / max(days, 1) + rng.normal(0, 0.002, n), 0, 0.99
        )
        root_avail = np.round(root_size * (1 - used)).astype(np.int64)
        run_size = 2_000_000_000
        run_avail = np.round(run_size * (0.03 + rng.uniform(0, 0.002, n))).astype(np.int64)
        rx = np.round(
            LINK_SPEED
            * np.clip(r(0.05, 0.15) + 0.05 * busy * daily + rng.normal(0, 0.01, n), 0, 1),
            3,
        )
        tx = np.round(
            LINK_SPEED
            * np.clip(r(0.02, 0.08) + 0.03 * busy * daily + rng.normal(0, 0.01, n), 0, 1),
            3,
        )
        emit(CPU, labels, cpu)
        emit(MEMORY, labels, memory)
        root = f'{labels},device="/dev/sda1",fstype="ext4",mountpoint="/"'
        run = f'{labels},device="tmpfs",fstype="tmpfs",mountpoint="/run"'
        emit("node_filesystem_size_bytes", root, root_size)
        emit("node_filesystem_avail_bytes", root, root_avail)
        emit("node_filesystem_size_bytes", run, run_size)
        emit("node_filesystem_avail_bytes", run, run_avail)
        emit("node_network_speed_bytes", f'{labels},device="eth0"', LINK_SPEED)
        emit(RX, labels, rx)
        emit(TX, labels, tx)
        pct = {
            "cpu": cpu * 100,
            "memory": memory * 100,
            "disk": (1 - root_avail / root_size) * 100,
            "network": (rx + tx) / LINK_SPEED * 100,
        }
        for resource, values in pct.items():
            raw.append(
                pd.DataFrame(
                    {
                        "server_id": server,
                        "resource": resource,
                        "time": pd.to_datetime(ts, unit="s"),
                        "pct": values,
                    }
                )
            )
    samples = pd.concat(raw, ignore_index=True)
    samples["timestamp"] = samples["time"].dt.floor("D")
    by_day = samples.groupby(["server_id", "resource", "timestamp"])["pct"]
    expected = by_day.agg(["mean", "max"]).assign(p95=by_day.quantile(0.95)).reset_index()
    return Samples("\n".join(lines) + "\n", expected, samples)
