"""Real servers for the scale-out tests: PostgreSQL and a Dask scheduler with worker processes.

What matters beyond one machine (a worker that shares no disk with the launcher, a Dagster instance
every host writes to, task keys on a shared scheduler) is exactly what an in-process stand-in would
hide, so these start the real programs on 127.0.0.1, each on a free port (pytest-xdist runs test
files side by side), and stop them in teardown, also when a test fails.

- ``postgres_server`` (session fixture): a throwaway cluster (``initdb`` + ``pg_ctl``, as the
  ``postgres`` user when running as root, since both refuse root); ``create_database(name)`` gives a
  fresh database per test.
- ``dask_cluster(env, workers)``: ``dask scheduler`` and ``dask worker`` processes, each worker with
  its own empty working directory, HOME and TMPDIR and only the environment given (no inherited
  CAPACITY_DB), like a worker on another host; ``kill_worker`` SIGKILLs one's process group.
- ``write_instance(home, url)``: a Dagster instance folder from the shipped ``deploy/dagster.yaml``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_YAML = ROOT / "deploy" / "dagster.yaml"
PG_INSTALL_HINT = "apt-get install -y postgresql (Debian/Ubuntu; .ci/run does this)"
DASK = Path(sys.executable).parent / "dask"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip() or "(empty log)"
    except OSError:
        return "(no log)"


# --- PostgreSQL ------------------------------------------------------------------------------
def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian keeps it off PATH), or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, on a free loopback port, trust auth for the
    ``postgres`` user. A context manager: the server is stopped and its folder removed on exit."""

    def __init__(self, bin_dir: Path, start_timeout: float = 60.0):
        self.bin = bin_dir
        self.start_timeout = start_timeout
        self.port = 0
        # not under pytest's tmp folders: those are 0700 root, which the postgres user cannot enter
        self.root = Path(tempfile.mkdtemp(prefix="capacity-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self._running = False

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; returns its URL. The server is shared by every test file a
        pytest worker runs, so a name another file took already gets a suffix."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            taken = conn.execute("select 1 from pg_database where datname = %s", [name]).fetchone()
            if taken:
                name = f"{name}_{uuid.uuid4().hex[:8]}"
            conn.execute(f'create database "{name}"')
        return self.url(name)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self._as_owner, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def __enter__(self) -> PostgresServer:
        try:
            if self._as_owner:
                shutil.chown(self.root, "postgres", "postgres")
            done = self._run(
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            )
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed: {done.stdout}\n{done.stderr}")
            for _ in range(3):  # the free port can be taken between probing and binding
                if self._start():
                    return self
            raise RuntimeError(f"PostgreSQL did not start on a free port: {_tail(self.log)}")
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def _start(self) -> bool:
        self.port = free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        done = self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(int(self.start_timeout)),
            "-o",
            options,
            "start",
            timeout=self.start_timeout + 30,
        )
        if done.returncode == 0:
            self._running = True
            return True
        if "already in use" in _tail(self.log):
            return False
        raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()}\n{_tail(self.log)}")

    def __exit__(self, *exc) -> None:
        if self._running:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            self._running = False
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this pytest process (each xdist worker gets its own)."""
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip(f"PostgreSQL is not installed: {PG_INSTALL_HINT}")
    with PostgresServer(bin_dir) as server:
        yield server


def dagster_url(url: str) -> str:
    """``url`` with the psycopg2 driver named, as deploy/dagster.yaml asks (dagster-postgres
    needs psycopg2; SQLAlchemy 2.1 takes a plain postgresql:// for psycopg 3)."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg2://{rest}" if scheme in ("postgresql", "postgres") else url


def write_instance(home: Path, pg_url: str) -> dict[str, str]:
    """A Dagster instance folder at ``home`` with the shipped deploy/dagster.yaml, its schema
    created once here (processes opening a new instance at once race on creating it). Returns
    the environment that selects it: DAGSTER_HOME and DAGSTER_PG_URL."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEPLOY_YAML, home / "dagster.yaml")
    env = {"DAGSTER_HOME": str(home), "DAGSTER_PG_URL": dagster_url(pg_url)}
    with open_instance(env):
        pass
    return env


@contextlib.contextmanager
def open_instance(env: dict[str, str]):
    """The instance ``env`` (from write_instance) selects, opened in this process; the
    dagster.yaml reads DAGSTER_PG_URL from the environment while it opens."""
    from dagster import DagsterInstance

    before = os.environ.get("DAGSTER_PG_URL")
    os.environ["DAGSTER_PG_URL"] = env["DAGSTER_PG_URL"]
    try:
        instance = DagsterInstance.from_config(env["DAGSTER_HOME"])
    finally:
        if before is None:
            os.environ.pop("DAGSTER_PG_URL", None)
        else:
            os.environ["DAGSTER_PG_URL"] = before
    with instance:
        yield instance


# --- Dask --------------------------------------------------------------------------------------
def base_env() -> dict[str, str]:
    """What any process needs to start; nothing of the test's own settings (no CAPACITY_*)."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ")
    return {k: os.environ[k] for k in keep if k in os.environ}


@dataclass
class DaskCluster:
    address: str
    pids: dict[str, int]  # worker name -> the worker process's pid (the one running tasks)
    dirs: dict[str, Path]  # worker name -> its folder (work/, home/, tmp/, dask/)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker's whole process group (its nanny and worker process)."""
        _killpg(self.procs[name], signal.SIGKILL)


def _killpg(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _stop(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    for p in procs:
        if p.poll() is None:
            _killpg(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _killpg(p, signal.SIGKILL)  # also any child of the group left behind
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=5)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies without its teardown (a
    killed pytest), so no scheduler or worker outlives it (Linux; elsewhere teardown only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(args: list[str], env: dict, cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: killed as a whole
            preexec_fn=_die_with_parent,
        )


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def dask_cluster(
    env: dict[str, str], cwd_root: Path, workers: int = 2, start_timeout: float = 60.0
) -> Iterator[DaskCluster]:
    """A scheduler and ``workers`` workers (``w1`` ..) of one thread each, every process in its
    own session, every worker in ``cwd_root/wK`` with its own empty ``work`` (cwd), ``home``
    (HOME), ``tmp`` (TMPDIR) and ``dask`` (Dask's local directory) and ``env`` on top of
    PATH/LANG only. Everything is stopped on exit, whatever happened inside."""
    from distributed import Client

    cwd_root = Path(cwd_root)
    logs = cwd_root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    schedulers: list[subprocess.Popen] = []
    by_name: dict[str, subprocess.Popen] = {}
    try:
        for _ in range(3):  # a free port can be taken between probing and binding
            port = free_port()
            scheduler = _spawn(
                [
                    str(DASK),
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--no-dashboard",
                ],
                {**base_env(), **env},
                logs,
                logs / "scheduler.log",
            )
            schedulers.append(scheduler)
            if _wait_for_port(port, scheduler, start_timeout):
                break
        else:
            raise RuntimeError(f"dask scheduler did not start: {_tail(logs / 'scheduler.log')}")
        address = f"tcp://127.0.0.1:{port}"
        dirs = {}
        for k in range(1, workers + 1):
            name = f"w{k}"
            folder = cwd_root / name
            for sub in ("work", "home", "tmp", "dask"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            worker_env = {
                **base_env(),
                **env,
                "HOME": str(folder / "home"),
                "TMPDIR": str(folder / "tmp"),
            }
            by_name[name] = _spawn(
                [
                    str(DASK),
                    "worker",
                    address,
                    "--name",
                    name,
                    "--nthreads",
                    "1",
                    "--local-directory",
                    str(folder / "dask"),
                    "--no-dashboard",
                ],
                worker_env,
                folder / "work",
                logs / f"{name}.log",
            )
            dirs[name] = folder
        with Client(address, timeout=start_timeout) as client:
            try:
                client.wait_for_workers(workers, timeout=start_timeout)
            except TimeoutError:
                tails = "\n".join(f"{n}: {_tail(logs / f'{n}.log')}" for n in by_name)
                raise RuntimeError(f"dask workers did not connect:\n{tails}") from None
            # each worker names itself: the client's cached scheduler_info() can lag behind the
            # workers wait_for_workers saw (a KeyError on a worker's address, seen once in CI)
            pids = dict(client.run(lambda dask_worker: (dask_worker.name, os.getpid())).values())
        yield DaskCluster(address, pids, dirs, by_name)
    finally:
        # workers first, so they do not retry a scheduler that is gone; the client is closed
        _stop([*by_name.values(), *schedulers])


DASK_SCRATCH = (
    "dask",
    "dask-scratch-space",
)  # Dask's own locks (global, purge, *.dirlock) are here


def stray_files(worker_dir: Path) -> list[str]:
    """What a worker that shares no disk must not have written: a DuckDB file, a lock file, a
    SQLite file (a Dagster instance of its own) or a ``data/`` folder (the default paths)."""
    out = []
    for p in Path(worker_dir).rglob("*"):
        rel = p.relative_to(worker_dir)
        if rel.parts[:-1] == DASK_SCRATCH and p.suffix in (".lock", ".dirlock"):
            continue
        if (
            p.suffix in (".duckdb", ".lock", ".db", ".sqlite", ".wal")
            or (p.is_dir() and p.name == "data")
            or ".duckdb" in p.name
        ):
            out.append(str(rel))
    return sorted(out)


def graphql(port: int, query: str, timeout: float = 30) -> dict:
    """``query``'s data from the Dagster UI's GraphQL endpoint on ``port``; its errors raise."""
    import json
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = json.load(r)
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return body["data"]


@contextlib.contextmanager
def capacity_ui(work: Path, env: dict[str, str], log_path: Path) -> Iterator[dict]:
    """`capacity ui` (dg dev: webserver and daemon) in ``work`` with exactly ``env``, once its
    GraphQL answers: {port, proc}. Its output goes to ``log_path`` (a file: a full pipe would block
    the servers' logging); the whole process group is stopped at the end, whatever happened."""
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "capacity"), "ui", "--port", str(port)],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.time() + 120
            while True:
                try:
                    graphql(port, "{ version }")
                    break
                except OSError:
                    if time.time() > deadline or proc.poll() is not None:
                        raise AssertionError(
                            "capacity ui did not start:\n" + log_path.read_text(errors="replace")
                        ) from None
                    time.sleep(1)
            yield {"port": port, "proc": proc}
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # dg dev shuts its daemon down slowly
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)
