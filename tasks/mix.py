"""Prefect task ``mix``: ingested trajectories + synthesized ones -> the D that ``segment`` reads."""

from __future__ import annotations

from prefect import task

from progra_core import mix as core
from progra_core.config import PipelineConfig
from storage import DatasetRef, DatasetStore, fingerprint
from tasks._common import commit, dataset_cache_key


def mix_fingerprint(cfg: PipelineConfig, ingested: DatasetRef, synthesized: DatasetRef) -> str:
    return fingerprint(core.STAGE, core.mix_config(cfg.synthesize), [ingested.dataset_id, synthesized.dataset_id], core.CODE_VERSION)


@task(name="mix", cache_key_fn=dataset_cache_key, persist_result=True)
def mix(cfg: PipelineConfig, root: str, ingested: DatasetRef, synthesized: DatasetRef, output_stage: str = core.STAGE,
        dataset_id: str | None = None) -> DatasetRef:
    store = DatasetStore(root)
    dataset_id = dataset_id or mix_fingerprint(cfg, ingested, synthesized)
    if store.exists(output_stage, dataset_id):
        return store.ref(output_stage, dataset_id)
    table, rejects, stats = core.mix(store.read(ingested), store.read(synthesized), cfg.synthesize)
    return commit(store, output_stage, table, dataset_id=dataset_id, config=core.mix_config(cfg.synthesize),
                  parents=[ingested.dataset_id, synthesized.dataset_id], code_version=core.CODE_VERSION, rejects=rejects,
                  stats=stats, title="Mix: ingested + synthesized", rows_in=stats["rows_in"])
