"""Prefect task ``segment``: trajectories -> segments."""

from __future__ import annotations

from prefect import task

from progra_core import segment as core
from progra_core.config import PipelineConfig
from storage import DatasetRef, DatasetStore, fingerprint
from tasks._common import commit, dataset_cache_key


def segment_fingerprint(cfg: PipelineConfig, parent: DatasetRef) -> str:
    return fingerprint(core.STAGE, cfg.section("segment"), [parent.dataset_id], core.CODE_VERSION)


@task(name="segment", cache_key_fn=dataset_cache_key, persist_result=True)
def segment(cfg: PipelineConfig, root: str, trajectories: DatasetRef, output_stage: str = core.STAGE,
            dataset_id: str | None = None) -> DatasetRef:
    store = DatasetStore(root)
    dataset_id = dataset_id or segment_fingerprint(cfg, trajectories)
    if store.exists(output_stage, dataset_id):
        return store.ref(output_stage, dataset_id)
    table, rejects, stats = core.segment(store.read(trajectories), cfg.segment)
    return commit(store, output_stage, table, dataset_id=dataset_id, config=cfg.section("segment"),
                  parents=[trajectories.dataset_id], code_version=core.CODE_VERSION, rejects=rejects, stats=stats,
                  title="Segment", rows_in=trajectories.rows)
