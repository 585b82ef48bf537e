"""Prefect task ``sft``: sft_examples (or, for the SFT baseline, their segments) -> a LoRA adapter
registered in the ``models`` view."""

from __future__ import annotations

import tempfile

from prefect import get_run_logger, task
from transformers import AutoTokenizer

from progra_core import stages
from progra_core.config import PipelineConfig
from progra_core.methods import recipe
from progra_core.train import launch
from progra_core.train import sft as core
from progra_core.train.curves import plot_curves
from storage import DatasetRef, DatasetStore
from tasks.artifacts import Progress, log_train_step, publish_image
from tasks.models import policy_path, register_model
from tasks.runtime import STAGE_TASK, already_committed
from tasks.stage import ancestor, stage_fingerprint

STAGE = stages.get("sft")


def sft_fingerprint(cfg: PipelineConfig, examples: DatasetRef) -> str:
    return stage_fingerprint("sft", cfg, [examples.dataset_id])


@task(name="sft", **STAGE_TASK, log_prints=False)
def sft(cfg: PipelineConfig, root: str, examples: DatasetRef, output_stage: str = "models",
        dataset_id: str | None = None) -> DatasetRef:
    store = DatasetStore(root)
    dataset_id = dataset_id or sft_fingerprint(cfg, examples)
    if store.exists(output_stage, dataset_id):
        already_committed(output_stage, dataset_id)
        return store.ref(output_stage, dataset_id)
    r = recipe(cfg.method)
    segments = store.read(ancestor(store, examples, "segments")).to_pylist() if r.sft == "plain" else []
    rows = core.sft_rows(r, store.read(examples).to_pylist(), segments, cfg.sft_data.validation_percent, cfg.sft_data.seed,
                         cfg.tool_docs, cfg.sft_data.turn_ends)
    base = policy_path(cfg, root)
    rows, rejects, fit = core.fit_length(rows, AutoTokenizer.from_pretrained(base), cfg.sft.max_length)
    get_run_logger().info("sft (%s data): %d rows, %d trimmed, %d too long", r.sft, len(rows), fit["trimmed"], fit["too_long"])
    with tempfile.TemporaryDirectory(prefix="progra-sft-out-") as out:
        metrics = launch.train("progra_core.train.sft:train_sft", cfg.sft.launch, out_dir=out,
                               progress=Progress("sft-progress", cfg.sft.max_steps, what="steps"), log=log_train_step,
                               info=get_run_logger().info, rows=rows, base_path=base, cfg=cfg.sft, seed=cfg.sft_data.seed)
        png = plot_curves(metrics["log_history"], ["loss", "grad_norm"], f"{out}/curves.png", "SFT warm-up")
        metrics |= fit
        if png:
            publish_image("sft-curves", png, "SFT warm-up: training loss and gradient norm per step")
        return register_model(store, STAGE.name, dataset_id, out, base=cfg.models.policy, method=f"{r.sft}_sft",
                              parents=[examples.dataset_id], config={"sft": cfg.section("sft"), "data": r.sft},
                              code_version=STAGE.code_version, metrics=metrics, rejects=rejects)
