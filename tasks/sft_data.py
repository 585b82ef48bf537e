"""Prefect task ``sft_data``: augmented + segments (cold start) -> sft_examples."""

from __future__ import annotations

from prefect import task

from progra_core import sft_data as core
from progra_core.config import PipelineConfig
from storage import DatasetRef, DatasetStore, fingerprint
from tasks._common import ancestor, commit, dataset_cache_key


def sft_data_fingerprint(cfg: PipelineConfig, parent: DatasetRef) -> str:
    return fingerprint(core.STAGE, cfg.section("sft_data"), [parent.dataset_id], core.CODE_VERSION)


@task(name="sft_data", cache_key_fn=dataset_cache_key, persist_result=True)
def sft_data(cfg: PipelineConfig, root: str, augmented: DatasetRef, output_stage: str = core.STAGE,
             dataset_id: str | None = None) -> DatasetRef:
    store = DatasetStore(root)
    dataset_id = dataset_id or sft_data_fingerprint(cfg, augmented)
    if store.exists(output_stage, dataset_id):
        return store.ref(output_stage, dataset_id)
    segs = {r["segment_id"]: r for r in store.read(ancestor(store, augmented, "segments")).to_pylist()}
    table, rejects, stats = core.sft_data(store.read(augmented).to_pylist(), segs, cfg.sft_data)
    return commit(store, output_stage, table, dataset_id=dataset_id, config=cfg.section("sft_data"),
                  parents=[augmented.dataset_id], code_version=core.CODE_VERSION, rejects=rejects, stats=stats,
                  title="SFT data", rows_in=augmented.rows + len(segs))
