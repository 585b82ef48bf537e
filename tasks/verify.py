"""Prefect task ``verify``: awareness -> verified (LLM_ver rebuilds a_fc from S^a + info_meta)."""

from __future__ import annotations

from prefect import task

from progra_core import verify as core
from progra_core.config import PipelineConfig
from storage import DatasetRef, DatasetStore, fingerprint
from tasks._common import ancestor, dataset_cache_key, role_kwargs, role_payload, run_llm_stage


def verify_config(cfg: PipelineConfig) -> dict:
    return {"section": cfg.section("verify"), "verifier": role_payload(cfg, "verifier")}


def verify_fingerprint(cfg: PipelineConfig, parent: DatasetRef) -> str:
    return fingerprint(core.STAGE, verify_config(cfg), [parent.dataset_id], core.CODE_VERSION)


@task(name="verify", cache_key_fn=dataset_cache_key, persist_result=True)  # retries: per shard (llm.shard_retries)
def verify(cfg: PipelineConfig, root: str, awareness: DatasetRef, output_stage: str = core.STAGE,
           dataset_id: str | None = None) -> DatasetRef:
    store = DatasetStore(root)
    dataset_id = dataset_id or verify_fingerprint(cfg, awareness)
    if store.exists(output_stage, dataset_id):
        return store.ref(output_stage, dataset_id)
    segs = {r["segment_id"]: r for r in store.read(ancestor(store, awareness, "segments"),
                                                   columns=["segment_id", "tools", "scenario", "target_calls", "env",
                                                            "involved_classes"]).to_pylist()}
    items = [{**a, **{k: v for k, v in segs[a["segment_id"]].items() if k != "segment_id"}}
             for a in store.read(awareness).to_pylist()]
    return run_llm_stage(cfg, root, store, output_stage, dataset_id, items, "awareness_id", cfg.verify.shard_size,
                         lambda part, gw: core.verify_shard(part, gw, cfg.models.verifier, cfg.verify, **role_kwargs(cfg, "verifier")),
                         core.split_outcomes, config=verify_config(cfg), parent=awareness, code_version=core.CODE_VERSION,
                         title="Model-aware verification")
