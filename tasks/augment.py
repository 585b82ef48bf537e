"""Prefect task ``augment``: verified (equal) -> augmented (none + one sampled op each)."""

from __future__ import annotations

from prefect import task

from progra_core import augment as core
from progra_core.config import PipelineConfig
from storage import DatasetRef, DatasetStore, fingerprint
from tasks._common import ancestor, dataset_cache_key, role_kwargs, role_payload, run_llm_stage


def augment_config(cfg: PipelineConfig) -> dict:
    return {"section": cfg.section("augment"), "augmenter": role_payload(cfg, "augmenter")}


def augment_fingerprint(cfg: PipelineConfig, parent: DatasetRef) -> str:
    return fingerprint(core.STAGE, augment_config(cfg), [parent.dataset_id], core.CODE_VERSION)


@task(name="augment", cache_key_fn=dataset_cache_key, persist_result=True)  # retries: per shard (llm.shard_retries)
def augment(cfg: PipelineConfig, root: str, verified: DatasetRef, output_stage: str = core.STAGE,
            dataset_id: str | None = None) -> DatasetRef:
    store = DatasetStore(root)
    dataset_id = dataset_id or augment_fingerprint(cfg, verified)
    if store.exists(output_stage, dataset_id):
        return store.ref(output_stage, dataset_id)
    aw_ref = ancestor(store, verified, "awareness")
    keep = {r["awareness_id"] for r in store.read(verified).to_pylist() if r["equal"]}
    segs = {r["segment_id"]: r for r in store.read(ancestor(store, aw_ref, "segments"),
                                                   columns=["segment_id", "tools", "target_calls"]).to_pylist()}
    items = [{**a, "tools": segs[a["segment_id"]]["tools"], "target_calls": segs[a["segment_id"]]["target_calls"]}
             for a in store.read(aw_ref).to_pylist() if a["awareness_id"] in keep]
    return run_llm_stage(cfg, root, store, output_stage, dataset_id, items, "awareness_id", cfg.augment.shard_size,
                         lambda part, gw: core.augment_shard(part, gw, cfg.models.augmenter, cfg.augment, **role_kwargs(cfg, "augmenter")),
                         core.split_outcomes, config=augment_config(cfg), parent=verified, code_version=core.CODE_VERSION,
                         title="Augmentation")
