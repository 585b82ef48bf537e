"""Shared parts of the reliability tests: segments an llm-katan echo server answers with valid
awareness (``echo_data``), and the config that points the generator role at such a server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from progra_core.config import PipelineConfig, load_config
from tests.reliability import echo_data


@pytest.fixture(scope="session")
def bfcl_segments() -> list[dict]:
    return echo_data.bfcl_segment_rows()


@pytest.fixture()
def echo_segments(bfcl_segments):
    """``make(root, n) -> segments dataset id`` (see ``echo_data.write_echo_segments``)."""
    return lambda root, n: echo_data.write_echo_segments(root, n, bfcl_segments)


def echo_config(root: Path, api_base: str, *extra: str) -> PipelineConfig:
    """The embedded profile with the generator role on an echo server and every segment annotated;
    transport retries short enough for a test, shard retries after one second."""
    sets = [f"storage.root={root}", "models.generator=openai/echo", "models.api_base=" + json.dumps({"generator": api_base}),
            "awareness.generator=llm", "awareness.limit=null", "awareness.shard_size=16", "awareness.max_attempts=2", "llm.concurrency=8",
            "llm.max_retries=12", "llm.backoff_initial_s=0.02", "llm.backoff_max_s=0.2",
            "llm.shard_retries=1", "llm.shard_retry_delay_s=1", "synthesize.enabled=false"]
    return load_config("embedded", overrides=sets + list(extra))


def run_awareness(cfg: PipelineConfig, segments_id: str, return_state: bool = False):
    """The ``stage`` flow (what ``progra stage awareness`` and the stage-awareness deployment run)."""
    from flows.stage_flow import stage

    return stage(name="awareness", input_dataset_id=[segments_id], profile=None, config=cfg, return_state=return_state)


def awareness_outcome(root: Path, dataset_id: str) -> tuple[list[dict], list[dict], dict]:
    """(rows, rejects, manifest stats) of one awareness dataset."""
    from storage import DatasetStore

    store = DatasetStore(str(root))
    ref = store.ref("awareness", dataset_id)
    return store.read(ref).to_pylist(), store.read_rejects(ref).to_pylist(), ref.stats
