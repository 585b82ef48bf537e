"""Flow ``stage``: rerun any one stage on given input datasets with a config (a profile plus
``key=value`` overrides, or a whole config). It backs both ``progra stage <name>`` and the
``stage-<name>`` deployments, and it is what the pipeline dispatches to the GPU work pool.

Which stages exist, what each reads and writes, and whether it wants a GPU come from
:mod:`progra_core.stages`. A rerun with an unchanged config is a cache hit that returns the
existing dataset ids at once. Outputs go back as dataset ids, recorded under
``<root>/runs/<flow_run_id>.json`` so a parent on another machine reads them from the shared
storage root.
"""

from __future__ import annotations

from prefect import flow

import flows.evaluate  # noqa: F401 - registers the evaluate run
import tasks.grpo  # noqa: F401 - registers the grpo run
import tasks.sft  # noqa: F401 - registers the sft run
import tasks.synthesize  # noqa: F401 - registers the synthesize run
from flows.task_runners import with_runner
from progra_core import stages
from progra_core.config import PipelineConfig, resolve_config
from storage import DatasetRef, DatasetStore
from tasks.runtime import flow_run_id, refresh_catalog
from tasks.stage_tasks import STAGE_RUNS, check_inputs, run_data_stage

__all__ = ["run_stage", "stage", "input_refs"]


def prefect_deployment_name() -> str | None:
    """The deployment this flow run came from (None when called directly)."""
    from prefect.runtime import deployment

    try:
        return deployment.name
    except Exception:
        return None


def input_refs(cfg: PipelineConfig, name: str, inputs: list[str] | str | None) -> list[DatasetRef]:
    """The stage's input datasets by id, checked against what it declares it reads."""
    ids = [inputs] if isinstance(inputs, str) else list(inputs or [])
    check_inputs(name, ids)
    store = DatasetStore(cfg.storage.root)
    refs = [store.find(i) for i in ids]
    check_inputs(name, refs)
    return refs


def run_stage(cfg: PipelineConfig, name: str, inputs: list[str] | str | None = None, model_id: str | None = None,
              models: list[str] | None = None) -> dict[str, DatasetRef]:
    """Run stage ``name`` here through its registered run (tasks cached by dataset fingerprint); ``{label: ref}``.
    Labels: the output dataset for data stages, ``sft``/``grpo`` for models (none when the method has
    no such stage), ``<model_ref>/<method>`` per evaluated model."""
    refs = input_refs(cfg, name, inputs)
    if stages.get(name).kind == "sharded" and cfg.dispatch.task_runner != "thread":
        ref = with_runner(sharded_stage, cfg)(name, cfg, refs)
        return {ref.stage: ref}
    init = DatasetStore(cfg.storage.root).find(model_id) if model_id else None
    return STAGE_RUNS[name](cfg, refs, init=init, models=models)


@flow(name="shards", flow_run_name="{name}-shards")
def sharded_stage(name: str, cfg: PipelineConfig, refs: list) -> DatasetRef:
    """A paid stage whose shards go to the task runner ``dispatch.task_runner`` names (Dask, Ray):
    a subflow, because a flow's runner is fixed when it starts and ``stage`` starts on threads."""
    return run_data_stage(name, cfg, *refs)


@flow(name="stage", flow_run_name="stage-{name}", log_prints=True)
def stage(name: str, input_dataset_id: list[str] = [], overrides: list[str] | None = None,  # noqa: B006 - never mutated
          profile: str | None = "embedded", config: PipelineConfig | None = None, model_id: str | None = None,
          models: list[str] | None = None) -> dict[str, str]:
    """Rerun one stage from cached input datasets.

    Args:
        name: the stage (ingest, synthesize, mix, segment, awareness, verify, augment, sft_data, sft, grpo, evaluate).
        input_dataset_id: the input dataset ids, one per input the stage reads (see `progra datasets`); mix takes
            two (ingested trajectories, synthesized); ingest, synthesize and evaluate take none.
        overrides: config fields to change, `key=value` each (e.g. `models.verifier=openai/gpt-4o`).
        profile: config profile the overrides apply to (embedded, paper, tau2: the files in configs/); ignored when
            `config` is given (the pipeline passes its whole config).
        config: a whole pipeline config (what the full pipeline passes to the GPU pool).
        model_id: grpo: the adapter to start from (a models id); evaluate: the model `trained` names.
        models: evaluate: models under test (base, reasoning, trained, a models id, a LiteLLM string).
    """
    deployed = prefect_deployment_name()
    if deployed and deployed.startswith("stage-") and deployed != f"stage-{name}":
        raise ValueError(f"the {deployed} deployment runs stage {deployed.removeprefix('stage-')!r}, but its `name` "
                         f"parameter was changed to {name!r}: run the stage-{name} deployment instead")
    cfg = resolve_config(config, None if config is not None else profile, overrides)
    refs = run_stage(cfg, name, input_dataset_id, model_id, models)
    ids = {label: ref.dataset_id for label, ref in refs.items()}
    if (run_id := flow_run_id()) is not None:
        DatasetStore(cfg.storage.root).write_run_outputs(run_id, ids)
    refresh_catalog(cfg)
    return ids
