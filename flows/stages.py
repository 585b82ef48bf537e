"""Flow ``stage``: rerun one stage on a given input dataset with the current config. A rerun with
an unchanged config is a cache hit that returns the existing dataset at once."""

from __future__ import annotations

from prefect import flow

from progra_core.config import PipelineConfig, load_config
from storage import Catalog, DatasetRef, DatasetStore
from tasks import augment, awareness, segment, sft_data, synthesize, verify

#: stage name -> (task, fingerprint function, stage of its input dataset; None = no input)
STAGES = {
    "synthesize": (synthesize.synthesize, synthesize.synthesize_fingerprint, None),
    "segment": (segment.segment, segment.segment_fingerprint, "trajectories"),
    "awareness": (awareness.awareness, awareness.awareness_fingerprint, "segments"),
    "verify": (verify.verify, verify.verify_fingerprint, "awareness"),
    "augment": (augment.augment, augment.augment_fingerprint, "verified"),
    "sft_data": (sft_data.sft_data, sft_data.sft_data_fingerprint, "augmented"),
}


@flow(name="stage", log_prints=True)
def stage_flow(name: str, input_dataset_id: str | None = None, config: PipelineConfig | None = None,
               profile: str = "embedded") -> DatasetRef:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; choose from {sorted(STAGES)}")
    cfg = config or load_config(profile)
    run, fp, input_stage = STAGES[name]
    if input_stage is None:  # a source stage (synthesize): its config is its only input
        ref = run(cfg, cfg.storage.root, dataset_id=fp(cfg))
    else:
        if not input_dataset_id:
            raise ValueError(f"stage {name!r} needs --input: the id of a {input_stage!r} dataset")
        store = DatasetStore(cfg.storage.root)
        parent = store.find(input_dataset_id)
        if parent.stage != input_stage:
            raise ValueError(f"stage {name!r} reads a {input_stage!r} dataset, but {input_dataset_id} is {parent.stage!r}")
        ref = run(cfg, cfg.storage.root, parent, dataset_id=fp(cfg, parent))
    Catalog(cfg.storage.root, cfg.storage.catalog_path).refresh()
    return ref
