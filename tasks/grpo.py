"""Prefect task ``grpo``: episodes from D (train split) + the starting policy -> an adapter in the
``models`` view, every rollout in ``rollouts``, reward and KL curves as artifacts."""

from __future__ import annotations

import tempfile

import pyarrow as pa
from prefect import get_run_logger, task

from progra_core import stages
from progra_core.config import PipelineConfig
from progra_core.methods import recipe
from progra_core.schemas import ROLLOUTS
from progra_core.train import grpo as core
from progra_core.train import launch, rollout
from progra_core.train.curves import plot_curves
from progra_core.train.judge import judge_term
from storage import DatasetRef, DatasetStore, fingerprint
from tasks.artifacts import Progress, log_train_step, publish_image
from tasks.limits import gateway_for
from tasks.models import finish_tracking, policy_path, register_model, tracking_for
from tasks.runtime import STAGE_TASK, already_committed, endpoint, flow_run_id
from tasks.stage import stage_fingerprint

STAGE = stages.get("grpo")


def grpo_fingerprint(cfg: PipelineConfig, trajectories: DatasetRef, init: DatasetRef | None) -> str:
    return stage_fingerprint("grpo", cfg, [trajectories.dataset_id, init.dataset_id if init else "base"])


@task(name="grpo", **STAGE_TASK, log_prints=False)
def grpo(cfg: PipelineConfig, root: str, trajectories: DatasetRef, init: DatasetRef | None, output_stage: str = "models",
         dataset_id: str | None = None) -> DatasetRef:
    store = DatasetStore(root)
    dataset_id = dataset_id or grpo_fingerprint(cfg, trajectories, init)
    if store.exists(output_stage, dataset_id):
        already_committed(output_stage, dataset_id)
        return store.ref(output_stage, dataset_id)
    r = recipe(cfg.method)
    rows = store.read(trajectories).to_pylist()
    if r.grpo == "single":
        episodes, rejects = rollout.single_step_episodes(rows, cfg.tool_docs)
    else:
        episodes, rejects = rollout.episodes_from_trajectories(rows, cfg.grpo.max_turns)
    episodes = core.select_episodes(episodes, cfg.grpo)
    adapter = store.local_model(store.read(init).to_pylist()[0]["adapter_path"]) if init else None
    get_run_logger().info("grpo (%s rollouts, from %s): %d episodes, %d rejects", r.grpo, adapter or "base", len(episodes), len(rejects))
    judge_stats: dict = {}
    extra = {}
    if "judge" in r.reward_terms:  # TARL: one gateway for every verdict of the run (cached, batched)
        if cfg.grpo.launch.num_processes > 1:
            raise ValueError(f"{r.name} scores turns with an LLM judge, which runs in the stage's process only: "
                             "set grpo.launch.num_processes=1 for it")
        gateway = gateway_for(cfg, root)
        extra["judge"] = judge_term(gateway, endpoint(cfg, "judge"), seed=cfg.grpo.seed, stats=judge_stats)
    checkpoints = store.checkpointing(STAGE.name, dataset_id, cfg.grpo.save_steps, cfg.grpo.save_total_limit)
    tracking, tracking_url = tracking_for(cfg, store, STAGE.name, dataset_id, {
        "method": r.name, "base": cfg.models.policy, "trajectories": trajectories.dataset_id,
        "init": init.dataset_id if init else None, "grpo": cfg.section("grpo")})
    with tempfile.TemporaryDirectory(prefix="progra-grpo-out-") as out:
        metrics, table = launch.train(
            "progra_core.train.grpo:train_grpo", cfg.grpo.launch, out_dir=out,
            progress=Progress("grpo-progress", cfg.grpo.max_steps, what="steps"), log=log_train_step,
            info=get_run_logger().info, episodes=episodes, r=r, cfg=cfg.grpo, base_path=policy_path(cfg, root),
            adapter_path=adapter, run=dataset_id, docs_style=cfg.tool_docs,
            rubric=core.rubric_for(r, cfg.grpo, extra) if extra else None, checkpoints=checkpoints,
            tracking=tracking)
        if metrics.get("resumed_from_step"):
            get_run_logger().info("grpo resumed from step %d of %d (%s)", metrics["resumed_from_step"], cfg.grpo.max_steps,
                                  checkpoints.local)
        if extra:
            gateway.close()
            metrics["judge"] = judge_stats
        png = plot_curves(metrics["log_history"], ["reward", "kl", "rewards/reward_acc/mean"], f"{out}/curves.png",
                          f"PAG-RL ({r.name})")
        if png:
            publish_image("grpo-curves", png, f"PAG-RL ({r.name}): mean reward, KL to the reference and SUCCESS per step")
        store.write("rollouts", table.cast(ROLLOUTS) if table.num_rows else pa.Table.from_pylist([], schema=ROLLOUTS),
                    dataset_id=fingerprint("rollouts", {}, [dataset_id]), parents=[dataset_id], flow_run_id=flow_run_id(),
                    stats={"rows": table.num_rows})
        parents = [trajectories.dataset_id] + ([init.dataset_id] if init else [])
        ref = register_model(store, STAGE.name, dataset_id, out, base=cfg.models.policy, method=r.name, parents=parents,
                             config={"grpo": cfg.section("grpo"), "method": r.name}, code_version=STAGE.code_version,
                             metrics=metrics, rejects=rejects, tracked=finish_tracking(store, tracking, tracking_url))
    if checkpoints:  # the model is registered: they only served a resume
        checkpoints.clear()
    return ref
