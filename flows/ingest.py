"""Flow ``ingest``: sources -> ``trajectories``."""

from __future__ import annotations

from prefect import flow

from progra_core.config import PipelineConfig, load_config
from storage import Catalog, DatasetRef
from tasks.stage import run_data_stage


@flow(name="ingest", log_prints=True)
def ingest_flow(config: PipelineConfig | None = None, profile: str = "embedded") -> DatasetRef:
    cfg = config or load_config(profile)
    ref = run_data_stage("ingest", cfg)
    Catalog(cfg.storage.root, cfg.storage.catalog_path).refresh()
    return ref
