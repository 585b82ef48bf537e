"""Flow ``stage``: rerun any one stage on a given input dataset with a config (a profile plus
``key=value`` overrides, or a whole config). It backs both ``progra stage <name>`` and the
``stage-<name>`` deployments, and it is what the pipeline dispatches to the GPU work pool.

A rerun with an unchanged config is a cache hit that returns the existing dataset ids at once.
Outputs go back as dataset ids, recorded under ``<root>/runs/<flow_run_id>.json`` so a parent on
another machine reads them from the shared storage root.
"""

from __future__ import annotations

from prefect import flow

from progra_core.config import PipelineConfig, resolve_config
from storage import Catalog, DatasetRef, DatasetStore
from tasks import augment, awareness, segment, sft_data, synthesize, verify
from tasks._common import flow_run_id

#: data stage name -> (task, fingerprint function, stage of its input dataset; None = no input)
STAGES = {
    "synthesize": (synthesize.synthesize, synthesize.synthesize_fingerprint, None),
    "segment": (segment.segment, segment.segment_fingerprint, "trajectories"),
    "awareness": (awareness.awareness, awareness.awareness_fingerprint, "segments"),
    "verify": (verify.verify, verify.verify_fingerprint, "awareness"),
    "augment": (augment.augment, augment.augment_fingerprint, "verified"),
    "sft_data": (sft_data.sft_data, sft_data.sft_data_fingerprint, "augmented"),
}
#: the stages that train or run the policy (and so want a GPU); input dataset stage of each
MODEL_STAGES = {"sft": "sft_examples", "grpo": "trajectories", "evaluate": None}
STAGE_NAMES = [*STAGES, *MODEL_STAGES]


def is_gpu_stage(cfg: PipelineConfig, name: str) -> bool:
    """sft, grpo and evaluate always; verify when LLM_ver is an in-process ``local/`` model."""
    return name in MODEL_STAGES or (name == "verify" and cfg.models.verifier.startswith("local/"))


def input_stage(name: str) -> str | None:
    if name not in STAGE_NAMES:
        raise ValueError(f"unknown stage {name!r}; choose from {STAGE_NAMES}")
    return STAGES[name][2] if name in STAGES else MODEL_STAGES[name]


def run_stage(cfg: PipelineConfig, name: str, input_dataset_id: str | None = None, model_id: str | None = None,
              models: list[str] | None = None) -> dict[str, DatasetRef]:
    """Run stage ``name`` here (tasks cached by dataset fingerprint); ``{label: ref}``. Labels:
    the output stage for data stages, ``sft``/``grpo`` for models (none when the method has no such
    stage), ``<model_ref>/<method>`` per evaluated model."""
    from flows import evaluate as evaluate_flow
    from flows import train

    want = input_stage(name)
    if want is not None and not input_dataset_id:
        raise ValueError(f"stage {name!r} needs an input: the id of a {want!r} dataset (progra datasets {want})")
    if name == "sft":
        ref = train.sft.fn(input_dataset_id, cfg)
        return {"sft": ref} if ref else {}
    if name == "grpo":
        ref = train.grpo.fn(input_dataset_id, model_id, cfg)
        return {"grpo": ref} if ref else {}
    if name == "evaluate":
        return evaluate_flow.evaluate.fn(models, model_id, cfg)
    run, fp, _ = STAGES[name]
    if want is None:  # a source stage (synthesize): its config is its only input
        ref = run(cfg, cfg.storage.root, dataset_id=fp(cfg))
    else:
        parent = DatasetStore(cfg.storage.root).find(input_dataset_id)
        if parent.stage != want:
            raise ValueError(f"stage {name!r} reads a {want!r} dataset, but {input_dataset_id} is {parent.stage!r}")
        ref = run(cfg, cfg.storage.root, parent, dataset_id=fp(cfg, parent))
    Catalog(cfg.storage.root, cfg.storage.catalog_path).refresh()
    return {ref.stage: ref}


@flow(name="stage", flow_run_name="stage-{name}", log_prints=True)
def stage(name: str, input_dataset_id: str | None = None, overrides: list[str] | None = None, profile: str | None = "embedded",
          config: PipelineConfig | None = None, model_id: str | None = None,
          models: list[str] | None = None) -> dict[str, str]:
    """Rerun one stage from a cached input dataset.

    Args:
        name: synthesize, segment, awareness, verify, augment, sft_data, sft, grpo or evaluate.
        input_dataset_id: id of the input dataset (see `progra datasets`); synthesize and evaluate take none.
        overrides: config fields to change, `key=value` each (e.g. `models.verifier=openai/gpt-4o`).
        profile: config profile the overrides apply to (embedded, paper); ignored when `config` is given.
        config: a whole pipeline config (what the full pipeline passes to the GPU pool).
        model_id: grpo: the adapter to start from (a models id); evaluate: the model `trained` names.
        models: evaluate: models under test (base, reasoning, trained, a models id, a LiteLLM string).
    """
    cfg = resolve_config(config, None if config is not None else profile, overrides)
    refs = run_stage(cfg, name, input_dataset_id, model_id, models)
    ids = {label: ref.dataset_id for label, ref in refs.items()}
    if (run_id := flow_run_id()) is not None:
        DatasetStore(cfg.storage.root).write_run_outputs(run_id, ids)
    return ids
