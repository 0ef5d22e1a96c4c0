"""The test servers themselves: they start, isolate what they should, and stop."""

import os
import time

import psutil
import psycopg
import pytest

from capacity_assets_tests.servers import PostgresServer, dask_cluster, pg_bin


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def test_postgres_starts_on_a_free_port_and_stops_with_its_folder():
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with PostgresServer(bin_dir) as pg:
        assert pg.port != 5432
        url = pg.create_database("probe")
        with psycopg.connect(url) as conn:
            assert conn.execute("select current_database(), inet_server_port()").fetchone() == (
                "probe",
                pg.port,
            )
        root = pg.root
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=3)
    assert not root.exists()


def _environment():
    keys = ("HOME", "TMPDIR", "CAPACITY_DB", "CAPACITY_THRESHOLD", "CAPACITY_BATCHES")
    return os.getcwd(), {k: os.environ.get(k) for k in keys}


def test_dask_workers_start_isolated_and_every_process_stops(tmp_path):
    from distributed import Client

    with dask_cluster({"CAPACITY_THRESHOLD": "90"}, tmp_path, workers=2) as cluster:
        assert sorted(cluster.pids) == ["w1", "w2"]
        assert all(_alive(pid) for pid in cluster.pids.values())
        with Client(cluster.address) as client:
            names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
            seen = {names[a]: v for a, v in client.run(_environment).items()}
        for name, (cwd, env) in seen.items():
            folder = cluster.dirs[name]
            # its own working directory, HOME and TMPDIR; the settings given and nothing inherited
            assert cwd == str(folder / "work")
            assert env == {
                "HOME": str(folder / "home"),
                "TMPDIR": str(folder / "tmp"),
                "CAPACITY_DB": None,
                "CAPACITY_THRESHOLD": "90",
                "CAPACITY_BATCHES": None,  # set in this process by conftest, not passed on
            }
            assert [p.name for sub in ("work", "home") for p in (folder / sub).iterdir()] == []
        assert os.environ.get("CAPACITY_BATCHES")  # (so the None above means something)
        cluster.kill_worker("w1")
        assert _gone(cluster.pids["w1"])
        assert _alive(cluster.pids["w2"])
        procs = list(cluster.procs.values())
    assert _gone(cluster.pids["w2"])
    assert all(p.poll() is not None for p in procs)
    with pytest.raises(OSError):
        Client(cluster.address, timeout=2)


def test_capacity_run_keeps_a_shared_clusters_worker_threads_busy(tmp_path):
    """With CAPACITY_DASK_ADDRESS a run's process mostly waits for the cluster, so `capacity run`
    starts as many runs as the cluster has worker threads, not as the launcher has cores."""
    from capacity_assets import config
    from capacity_assets.pipeline.executors import run_slots

    with dask_cluster({}, tmp_path, workers=3) as cluster:
        shared = config.load(
            {
                "CAPACITY_EXECUTOR": "dask",
                "CAPACITY_DASK_ADDRESS": cluster.address,
                "CAPACITY_DB": "postgresql://u@127.0.0.1:1/x",
            }
        )
        assert run_slots(shared, cores=2) == 3
        assert run_slots(config.load({"CAPACITY_EXECUTOR": "dask"}), cores=2) == 2  # local cluster
    # a scheduler that cannot be asked: the cores (the run then names the address it cannot reach)
    assert run_slots(shared, cores=2) == 2
