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
from storage import DatasetRef, DatasetStore, fingerprint
from tasks.artifacts import Progress, log_train_step, publish_image
from tasks.limits import gateway_for
from tasks.models import finish_tracking, policy_path, register_model, tracking_for
from tasks.runtime import STAGE_TASK, already_committed, endpoint, flow_run_id
from tasks.stage_tasks import stage_fingerprint, stage_run

STAGE = stages.get("grpo")


def grpo_fingerprint(cfg: PipelineConfig, trajectories: DatasetRef, init: DatasetRef | None) -> str:
    return stage_fingerprint("grpo", cfg, _parents(trajectories, init))


def _parents(trajectories: DatasetRef, init: DatasetRef | None) -> list[str]:
    """The episodes' trajectories and, when RL starts from an adapter, that adapter (hashed and recorded alike)."""
    return [trajectories.dataset_id] + ([init.dataset_id] if init else [])


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
    term_stats: dict[str, dict] = {}
    extra = {}
    model_terms = [t for t in r.reward_terms if t in core.MODEL_TERMS]
    if model_terms:  # terms that ask a model (TARL's judge): one gateway for every call of the run (cached, batched)
        if cfg.grpo.launch.num_processes > 1:
            raise ValueError(f"{r.name} scores with {model_terms}, which ask a model in the stage's process only: "
                             "set grpo.launch.num_processes=1 for it")
        gateway = gateway_for(cfg, root)
        for name in model_terms:
            term = core.MODEL_TERMS[name]
            extra[name] = term.build(gateway, endpoint(cfg, term.role), seed=cfg.grpo.seed,
                                     stats=term_stats.setdefault(name, {}))
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
            metrics |= term_stats
        png = plot_curves(metrics["log_history"], ["reward", "kl", "rewards/reward_acc/mean"], f"{out}/curves.png",
                          f"PAG-RL ({r.name})")
        if png:
            publish_image("grpo-curves", png, f"PAG-RL ({r.name}): mean reward, KL to the reference and SUCCESS per step")
        store.write("rollouts", table.cast(ROLLOUTS) if table.num_rows else pa.Table.from_pylist([], schema=ROLLOUTS),
                    dataset_id=fingerprint("rollouts", {}, [dataset_id]), parents=[dataset_id], flow_run_id=flow_run_id(),
                    stats={"rows": table.num_rows})
        ref = register_model(store, STAGE.name, dataset_id, out, base=cfg.models.policy, method=r.name,
                             parents=_parents(trajectories, init), config=STAGE.config(cfg), code_version=STAGE.code_version,
                             metrics=metrics, rejects=rejects, tracked=finish_tracking(store, tracking, tracking_url))
    if checkpoints:  # the model is registered: they only served a resume
        checkpoints.clear()
    return ref


@stage_run("grpo")
def run(cfg: PipelineConfig, refs: list[DatasetRef], *, init: DatasetRef | None = None, **_) -> dict[str, DatasetRef]:
    """trajectories (+ the adapter ``init``, else the base policy) -> ``{"grpo": adapter}``; nothing for
    a method without RL."""
    if init is not None and init.stage != "models":
        raise ValueError(f"grpo starts from a registered adapter, but {init.dataset_id} is a {init.stage!r} dataset")
    if not recipe(cfg.method).grpo:
        return {}
    return {"grpo": grpo(cfg, cfg.storage.root, refs[0], init, dataset_id=grpo_fingerprint(cfg, refs[0], init))}
