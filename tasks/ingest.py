"""Prefect task ``ingest``: build the ``trajectories`` dataset (cached by its fingerprint)."""

from __future__ import annotations

from prefect import get_run_logger, task

from progra_core import ingest as core
from progra_core.config import IngestConfig
from storage import DatasetRef, DatasetStore, fingerprint
from tasks._common import Progress, dataset_cache_key, flow_run_id, funnel_markdown, publish_funnel


def ingest_fingerprint(cfg: IngestConfig) -> str:
    return fingerprint(core.OUTPUT, core.fingerprint_inputs(cfg), [], core.CODE_VERSION)


@task(name="ingest", cache_key_fn=dataset_cache_key, persist_result=True, retries=1, retry_delay_seconds=2)
def ingest(cfg: IngestConfig, root: str, output_stage: str = core.OUTPUT, dataset_id: str | None = None) -> DatasetRef:
    logger = get_run_logger()
    store = DatasetStore(root)
    dataset_id = dataset_id or ingest_fingerprint(cfg)
    if store.exists(output_stage, dataset_id):
        logger.info("trajectories %s already exists: nothing to do", dataset_id)
        return store.ref(output_stage, dataset_id)
    table, rejects, stats = core.ingest(cfg, progress=Progress("ingest-progress", every=25))
    ref = store.write(output_stage, table, dataset_id=dataset_id, config=cfg.model_dump(), code_version=core.CODE_VERSION,
                      rejects=rejects, flow_run_id=flow_run_id(), stats=stats)
    logger.info("trajectories %s: %d rows, %d rejects", ref.dataset_id, ref.rows, ref.rejects)
    publish_funnel("ingest-funnel", funnel_markdown(
        "Ingest", [("ingest", stats["rows"] + stats["rejects"], stats["rows"], stats["rejects"])],
        stats["rejects_by_reason"], links={"trajectories": ref.path}))
    return ref
