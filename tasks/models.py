"""What the model stages (sft, grpo) share: the base policy as a folder, and registering a trained
adapter with its ``train_log`` and ``models`` rows and a model card artifact."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
from prefect import get_run_logger

from progra_core.config import PipelineConfig
from progra_core.llm import Gateway
from progra_core.schemas import MODELS, TRAIN_LOG
from progra_core.train.curves import log_rows
from storage import DatasetRef, DatasetStore, fingerprint
from tasks.artifacts import publish_markdown
from tasks.runtime import flow_run_id

__all__ = ["policy_path", "register_model"]


def policy_path(cfg: PipelineConfig, root: str) -> str:
    """The base policy as a local folder: ``local/<name>`` via the gateway's resolver (the
    embedded model is converted on first use), anything else as given (an HF id or a path)."""
    model = cfg.models.policy
    if model.startswith("local/"):
        return Gateway.from_config(cfg, root).local_path(model)
    return model


def register_model(store: DatasetStore, stage: str, model_id: str, out_dir, *, base: str, method: str, parents: list[str],
                   config: dict, code_version: str, metrics: dict, rejects: list[dict] | None = None) -> DatasetRef:
    """Put the adapter under ``<root>/models/<stage>/<model_id>``, write its ``train_log`` rows
    and its ``models`` row (dataset id = model id), publish the model card; returns the models ref."""
    history = metrics.pop("log_history", [])
    adapter = store.put_model(out_dir, stage, model_id)
    store.write("train_log", pa.Table.from_pylist(log_rows(model_id, stage, history), schema=TRAIN_LOG),
                dataset_id=fingerprint("train_log", {}, [model_id]), parents=[model_id], flow_run_id=flow_run_id())
    row = {"model_id": model_id, "base": base, "adapter_path": adapter, "method": method, "stage": stage,
           "parents": parents, "metrics": json.dumps(metrics, default=str), "config": json.dumps(config, default=str),
           "created_at": datetime.now(UTC)}
    ref = store.write("models", pa.Table.from_pylist([row], schema=MODELS), dataset_id=model_id, config=config,
                      parents=parents, code_version=code_version, rejects=rejects, flow_run_id=flow_run_id(), stats=metrics)
    md = [f"# {stage}: {method}", "", f"adapter: `{adapter}`", "", "| metric | value |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in metrics.items() if not isinstance(v, (dict, list))]
    publish_markdown(f"{stage}-model", "\n".join(md), f"model card of the {stage} adapter {model_id} ({method}): metrics and path")
    get_run_logger().info("%s model %s -> %s (%s)", stage, model_id, adapter,
                          {k: v for k, v in metrics.items() if k in ("steps", "seconds_per_step")})
    return ref
