"""Prefect task ``awareness``: segments -> awareness (LLM_gen), shard by shard, resumable."""

from __future__ import annotations

from prefect import task

from progra_core import awareness as core
from progra_core.config import PipelineConfig
from storage import DatasetRef, DatasetStore, fingerprint
from tasks._common import dataset_cache_key, role_kwargs, role_payload, run_llm_stage


def awareness_config(cfg: PipelineConfig) -> dict:
    return {"section": cfg.section("awareness"), "generator": role_payload(cfg, "generator")}


def awareness_fingerprint(cfg: PipelineConfig, parent: DatasetRef) -> str:
    return fingerprint(core.STAGE, awareness_config(cfg), [parent.dataset_id], core.CODE_VERSION)


@task(name="awareness", cache_key_fn=dataset_cache_key, persist_result=True)  # retries: per shard (llm.shard_retries)
def awareness(cfg: PipelineConfig, root: str, segments: DatasetRef, output_stage: str = core.STAGE,
              dataset_id: str | None = None) -> DatasetRef:
    store = DatasetStore(root)
    dataset_id = dataset_id or awareness_fingerprint(cfg, segments)
    if store.exists(output_stage, dataset_id):
        return store.ref(output_stage, dataset_id)
    items = core.select_segments(store.read(segments).to_pylist(), cfg.awareness.limit, cfg.awareness.select)
    return run_llm_stage(cfg, root, store, output_stage, dataset_id, items, "segment_id", cfg.awareness.shard_size,
                         lambda part, gw: core.annotate(part, gw, cfg.models.generator, cfg.awareness, **role_kwargs(cfg, "generator")),
                         core.split_outcomes, config=awareness_config(cfg), parent=segments, code_version=core.CODE_VERSION,
                         title="Awareness")
