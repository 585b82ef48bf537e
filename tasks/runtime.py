"""What a task needs from the Prefect run it is in: the flow run id, the dataset-fingerprint cache
key, and the API keys of LLM roles (Prefect Secret blocks or named environment variables)."""

from __future__ import annotations

import os
import re

from prefect.blocks.system import Secret
from prefect.context import FlowRunContext, TaskRunContext

from progra_core.config import PipelineConfig
from progra_core.llm.types import Endpoint
from storage import DatasetStore

__all__ = ["flow_run_id", "dataset_cache_key", "key_env", "endpoint"]


def flow_run_id() -> str | None:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


def dataset_cache_key(context: TaskRunContext, parameters: dict) -> str | None:
    """Prefect cache key = the output dataset's fingerprint, but only while that dataset exists:
    if someone deleted it, the task runs again instead of returning a dangling reference."""
    root, stage, dataset_id = parameters.get("root"), parameters.get("output_stage"), parameters.get("dataset_id")
    if not (root and stage and dataset_id):
        return None
    return f"progra-{stage}-{dataset_id}" if DatasetStore(root).exists(stage, dataset_id) else None


def key_env(env: str | None, secret: str | None) -> str | None:
    """The env var a request reads its API key from. A Prefect Secret block is loaded into this
    process's environment under a derived name (once per process, on whichever worker runs the
    shard), so the key itself never enters a parameter, a config, a cache key or a dataset."""
    if not secret:
        return env
    name = "PROGRA_SECRET_" + re.sub(r"\W", "_", secret).upper()
    if not os.environ.get(name):
        os.environ[name] = str(Secret.load(secret).get())
    return name


def endpoint(cfg: PipelineConfig, role: str) -> Endpoint:
    """How ``role`` reaches its model in this process."""
    return Endpoint(getattr(cfg.models, role), cfg.models.api_base.get(role),
                    key_env(cfg.models.api_key_env.get(role), cfg.models.api_key_secret.get(role)))
