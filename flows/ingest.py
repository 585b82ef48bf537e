"""Flow ``ingest``: sources -> ``trajectories``."""

from __future__ import annotations

from prefect import flow

from progra_core.config import PipelineConfig, load_config
from storage import DatasetRef
from tasks.runtime import refresh_catalog
from tasks.stage_tasks import run_data_stage


@flow(name="ingest", log_prints=True)
def ingest_flow(config: PipelineConfig | None = None, profile: str = "embedded") -> DatasetRef:
    cfg = config or load_config(profile)
    ref = run_data_stage("ingest", cfg)
    refresh_catalog(cfg)
    return ref
