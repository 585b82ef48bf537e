"""Where a stage runs: ``dispatch_stage`` runs any stage in this process (``dispatch.mode: local``,
and every CPU stage) or a GPU stage as a run of its ``stage-<name>`` deployment on the GPU work
pool (``work_pool``).

In this process refs are passed as they are. Only ids cross the wire: the child gets the whole config and dataset ids as parameters, and its
outputs come back through the shared storage root (``runs/<flow_run_id>.json`` + the datasets),
never through Prefect results or in-memory objects. A child that does not complete fails the
parent with the child's own error.
"""

from __future__ import annotations

import time

from prefect import get_run_logger
from prefect.deployments import run_deployment

import flows.stage_flow  # noqa: F401 - every stage's run registered
from progra_core import stages
from progra_core.config import PipelineConfig
from storage import DatasetRef, DatasetStore
from tasks.stage_tasks import STAGE_RUNS, check_inputs

__all__ = ["StageRunFailed", "deployment_name", "dispatch_stage", "stage"]


class StageRunFailed(RuntimeError):
    """A dispatched stage run ended in a state other than Completed."""


def deployment_name(stage_name: str) -> str:
    return f"stage/stage-{stage_name}"


def dispatch_stage(cfg: PipelineConfig, name: str, *inputs: DatasetRef, init: DatasetRef | None = None,
                   models: list[str] | None = None) -> dict[str, DatasetRef]:
    """Run stage ``name`` where ``dispatch.mode`` says; ``{label: ref}``. In this process the refs go
    straight to the stage's registered run (its tasks join the calling flow); only a run on the GPU
    work pool turns them into ids, and the outputs back into refs."""
    st = stages.get(name)
    check_inputs(name, inputs)
    if cfg.dispatch.mode == "local" or not st.gpu(cfg):
        return STAGE_RUNS[name](cfg, list(inputs), init=init, models=models)
    return _dispatch(cfg, name, [r.dataset_id for r in inputs], init.dataset_id if init else None, models)


def stage(cfg: PipelineConfig, name: str, *inputs: DatasetRef) -> DatasetRef:
    """The one dataset a data stage writes (where ``dispatch.mode`` says): what the flows compose."""
    return dispatch_stage(cfg, name, *inputs)[stages.get(name).output]


def _dispatch(cfg: PipelineConfig, name: str, inputs, model_id, models) -> dict[str, DatasetRef]:
    log = get_run_logger()
    ids = [inputs] if isinstance(inputs, str) else list(inputs or [])
    params = {"name": name, "input_dataset_id": ids, "config": cfg.model_dump(mode="json"),
              "model_id": model_id, "models": models}
    log.info("dispatching %s to work pool %s (%s)", name, cfg.dispatch.gpu_pool, deployment_name(name))
    t0 = time.perf_counter()
    run = run_deployment(deployment_name(name), parameters=params, timeout=cfg.dispatch.timeout_s,
                         poll_interval=cfg.dispatch.poll_s, flow_run_name=f"stage-{name}")
    wall = time.perf_counter() - t0
    state = run.state
    where = f"flow run {run.name} ({run.id}) of {deployment_name(name)}"
    if state is None or not state.is_completed():
        if state is not None and not state.is_final():
            raise StageRunFailed(f"{where} did not finish within dispatch.timeout_s={cfg.dispatch.timeout_s}s "
                                 f"(state {state.name}); is a worker polling pool {cfg.dispatch.gpu_pool!r}?")
        # the child's message carries its exception ("Flow run encountered an exception: ...")
        raise StageRunFailed(f"{where} ended {state.name if state else 'without a state'}: {state.message if state else ''}")
    if run.work_pool_name and run.work_pool_name != cfg.dispatch.gpu_pool:
        log.warning("%s ran on pool %s, not %s", where, run.work_pool_name, cfg.dispatch.gpu_pool)
    ran = run.total_run_time.total_seconds()
    log.info("%s ran on %s: %.1f s waited, %.1f s running, %.1f s dispatch overhead", where, run.work_pool_name, wall, ran,
             wall - ran)
    ids = DatasetStore(cfg.storage.root).read_run_outputs(str(run.id))
    return _refs(cfg, name, ids, where)


def _refs(cfg: PipelineConfig, name: str, ids: dict[str, str], where: str) -> dict[str, DatasetRef]:
    store = DatasetStore(cfg.storage.root)
    out = {}
    for label, dataset_id in ids.items():
        try:
            out[label] = store.find(dataset_id)
        except Exception:
            raise StageRunFailed(f"{name} ({where}) reported dataset {dataset_id}, but it is not under "
                                 f"{store.root_url}: do the pipeline and the worker share storage.root?") from None
    return out
