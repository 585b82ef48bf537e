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
from tasks.models import finish_tracking, policy_path, register_model, tracking_for
from tasks.runtime import STAGE_TASK, already_committed
from tasks.stage_tasks import ancestor, stage_fingerprint, stage_run

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
    checkpoints = store.checkpointing(STAGE.name, dataset_id, cfg.sft.save_steps, cfg.sft.save_total_limit)
    tracking, tracking_url = tracking_for(cfg, store, STAGE.name, dataset_id, {
        "method": f"{r.sft}_sft", "base": cfg.models.policy, "sft_examples": examples.dataset_id, "sft": cfg.section("sft")})
    with tempfile.TemporaryDirectory(prefix="progra-sft-out-") as out:
        metrics = launch.train("progra_core.train.sft:train_sft", cfg.sft.launch, out_dir=out,
                               progress=Progress("sft-progress", cfg.sft.max_steps, what="steps"), log=log_train_step,
                               info=get_run_logger().info, rows=rows, base_path=base, cfg=cfg.sft, seed=cfg.sft_data.seed,
                               checkpoints=checkpoints, tracking=tracking)
        if metrics.get("resumed_from_step"):
            get_run_logger().info("sft resumed from step %d of %d (%s)", metrics["resumed_from_step"], cfg.sft.max_steps,
                                  checkpoints.local)
        png = plot_curves(metrics["log_history"], [("loss", "eval_loss"), "grad_norm"], f"{out}/curves.png", "SFT warm-up")
        metrics |= fit
        if png:
            publish_image("sft-curves", png, "SFT warm-up: training and validation loss, gradient norm per step")
        ref = register_model(store, STAGE.name, dataset_id, out, base=cfg.models.policy, method=f"{r.sft}_sft",
                             parents=[examples.dataset_id], config=STAGE.config(cfg),
                             code_version=STAGE.code_version, metrics=metrics, rejects=rejects,
                             tracked=finish_tracking(store, tracking, tracking_url))
    if checkpoints:  # the model is registered: they only served a resume
        checkpoints.clear()
    return ref


@stage_run("sft")
def run(cfg: PipelineConfig, refs: list[DatasetRef], **_) -> dict[str, DatasetRef]:
    """sft_examples -> ``{"sft": adapter}``; nothing for a method without SFT."""
    if not recipe(cfg.method).sft:
        return {}
    return {"sft": sft(cfg, cfg.storage.root, refs[0], dataset_id=sft_fingerprint(cfg, refs[0]))}
