"""The executor, chosen from CapacitySettings, and a Dask executor safe on a shared scheduler.

dagster-dask submits each step under the Dask key ``"{job_name}.{step_key}"``, with no run id.
Dask treats equal keys as one task, so two runs of one job on one shared scheduler (``capacity
run`` and every UI backfill start several at once) share results: the later run is handed the
earlier run's step events and reports success without computing its batches. ``DaskExecutor``
here changes only that key: it hands dagster-dask's executor a plan context whose ``job_name`` is
``"{job_name}.{run_id}"`` (dagster-dask uses the name for nothing but the task key and the name of
a cluster it starts itself).
"""

from __future__ import annotations

import functools

import dagster as dg

from capacity_assets.config import CapacitySettings


def build_executor(settings: CapacitySettings) -> dg.ExecutorDefinition:
    """``in_process`` by default: a batch's steps share one process (imports paid once per run),
    while batches run in parallel as separate runs. ``multiprocess`` is Dagster's default, ``dask``
    sends steps to a Dask cluster (CAPACITY_DASK_ADDRESS, or a local one)."""
    if settings.executor == "in_process":
        return dg.in_process_executor
    if settings.executor == "multiprocess":
        return dg.multiprocess_executor
    address = settings.dask_address
    cluster = (
        {"existing": {"address": address}}
        if address
        else {
            "local": {
                "n_workers": settings.dask_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": ":0",
            }
        }
    )
    return dask_executor().configured({"cluster": cluster})


def run_slots(settings: CapacitySettings, cores: int) -> int:
    """How many runs keep the executor busy. On one machine its cores: more runs than cores only
    add memory. With a shared Dask cluster (CAPACITY_DASK_ADDRESS) a run's process mostly waits
    for the cluster, so the cluster's worker threads, counted on its scheduler now; where it
    cannot be asked, the cores, and the run itself then says why it cannot reach it."""
    if settings.executor != "dask" or not settings.dask_address:
        return cores
    from distributed import Client

    try:
        with Client(settings.dask_address, timeout=10) as client:
            workers = client.scheduler_info(n_workers=-1)["workers"].values()
            return max(cores, sum(int(w.get("nthreads", 1)) for w in workers))
    except OSError:
        return cores


def dask_executor() -> dg.ExecutorDefinition:
    """dagster-dask's ``dask_executor`` (same name and config schema) building ``DaskExecutor``.
    A function, so dagster-dask stays an optional extra (pip install .[dask])."""
    return _definitions()["executor"]


@functools.cache
def _definitions() -> dict:
    """The subclass and its executor definition, made on first use (imports dask.distributed)."""
    import dagster_dask.executor as stock

    from capacity_assets.pipeline.dagster_private import PlanOrchestrationContext

    class RunScopedPlanContext(PlanOrchestrationContext):
        """The run's plan context, but its job name carries the run id."""

        @property
        def job_name(self) -> str:
            return f"{self.dagster_run.job_name}.{self.run_id}"

    class DaskExecutor(stock.DaskExecutor):
        """dagster-dask's executor with each Dask task key scoped to its run."""

        def execute(self, plan_context, execution_plan):
            scoped = RunScopedPlanContext(
                plan_data=plan_context.plan_data,
                log_manager=plan_context.log,
                executor=plan_context.executor,
                output_capture=plan_context.output_capture,
                resume_from_failure=plan_context.resume_from_failure,
            )
            return super().execute(scoped, execution_plan)

    @dg.executor(
        name=stock.dask_executor.name,
        config_schema=stock.dask_executor.config_schema,
        requirements=dg.multiple_process_executor_requirements(),
    )
    def executor(init_context):
        """dagster-dask's Dask executor, each step's task key carrying the run id."""
        ((cluster_type, cluster_configuration),) = init_context.executor_config["cluster"].items()
        return DaskExecutor(cluster_type, cluster_configuration)

    return {"executor": executor, "DaskExecutor": DaskExecutor, "context": RunScopedPlanContext}
