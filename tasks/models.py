"""What the model stages (sft, grpo) share: the base policy as a folder, and registering a trained
adapter with its ``train_log`` and ``models`` rows and a model card artifact."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from prefect import get_run_logger

from progra_core.config import PipelineConfig
from progra_core.schemas import MODELS, TRAIN_LOG
from progra_core.train.curves import log_rows
from progra_core.train.tracking import Tracking
from storage import DatasetRef, DatasetStore, fingerprint
from storage.cards import model_card
from tasks.artifacts import publish_markdown
from tasks.limits import gateway_for
from tasks.runtime import flow_run_id

__all__ = ["model_path", "policy_path", "register_model", "tracking_for", "finish_tracking"]


def model_path(cfg: PipelineConfig, root: str, model: str) -> str:
    """A model as a local folder: ``local/<name>`` via the gateway's resolver (the embedded model is
    converted on first use), as an absolute path, anything else as given (an HF id or a path).
    Absolute because PEFT writes it into every adapter's ``adapter_config.json``
    (``base_model_name_or_path``): a path relative to one working directory resolves nowhere else."""
    if model.startswith("local/"):
        gateway = gateway_for(cfg, root)
        try:
            return str(Path(gateway.local_path(model)).resolve())
        finally:
            gateway.close()
    return model


def policy_path(cfg: PipelineConfig, root: str) -> str:
    """The base policy (``models.policy``) as a local folder: :func:`model_path`."""
    return model_path(cfg, root, cfg.models.policy)


def tracking_for(cfg: PipelineConfig, store: DatasetStore, stage: str, model_id: str, params: dict) -> tuple[Tracking | None, str | None]:
    """(what the training call reports to, the URL its TensorBoard folder goes to afterwards on a remote root)."""
    if not cfg.tracking.report_to:
        return None, None
    local, remote = store.tracking_dir(stage, model_id)
    return Tracking(tuple(cfg.tracking.report_to), local, {"model_id": model_id, "stage": stage, **params}), remote


def finish_tracking(store: DatasetStore, tracking: Tracking | None, remote: str | None) -> str | None:
    """Upload a remote root's TensorBoard folder; returns where the run's events are (for the model card)."""
    if tracking is None or not tracking.log_dir or "tensorboard" not in tracking.report_to:
        return None
    if remote:
        store.put_tree(tracking.log_dir, remote)
        return remote
    return tracking.log_dir


def register_model(store: DatasetStore, stage: str, model_id: str, out_dir, *, base: str, method: str, parents: list[str],
                   config: dict, code_version: str, metrics: dict, rejects: list[dict] | None = None,
                   tracked: str | None = None) -> DatasetRef:
    """Put the adapter under ``<root>/models/<stage>/<model_id>``, write its ``train_log`` rows
    and its ``models`` row (dataset id = model id), publish the model card; returns the models ref."""
    history = metrics.pop("log_history", [])
    row = {"model_id": model_id, "base": base, "adapter_path": None, "method": method, "stage": stage,
           "parents": parents, "metrics": json.dumps(metrics, default=str), "config": json.dumps(config, default=str),
           "created_at": datetime.now(UTC)}
    base_folder = json.loads((Path(out_dir) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    # the adapter's own card from its lineage, over the blank template PEFT saves
    (Path(out_dir) / "README.md").write_text(model_card(store, row, [], base_folder=base_folder, merged=False), encoding="utf-8")
    adapter = store.put_model(out_dir, stage, model_id)
    store.write("train_log", pa.Table.from_pylist(log_rows(model_id, stage, history), schema=TRAIN_LOG),
                dataset_id=fingerprint("train_log", {}, [model_id]), parents=[model_id], flow_run_id=flow_run_id())
    row["adapter_path"] = adapter
    ref = store.write("models", pa.Table.from_pylist([row], schema=MODELS), dataset_id=model_id, config=config,
                      parents=parents, code_version=code_version, rejects=rejects, flow_run_id=flow_run_id(), stats=metrics)
    md = [f"# {stage}: {method}", "", f"adapter: `{adapter}`", ""]
    if tracked:
        md += [f"tracking: TensorBoard events in `{tracked}` (`tensorboard --logdir {tracked}`)", ""]
    md += ["| metric | value |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in metrics.items() if not isinstance(v, (dict, list))]
    publish_markdown(f"{stage}-model", "\n".join(md), f"model card of the {stage} adapter {model_id} ({method}): metrics and path")
    get_run_logger().info("%s model %s -> %s (%s)", stage, model_id, adapter,
                          {k: v for k, v in metrics.items() if k in ("steps", "seconds_per_step")})
    return ref
