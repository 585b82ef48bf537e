"""Prefect task ``grpo``: episodes from D (train split) + the starting policy -> an adapter in the
``models`` view, every rollout in ``rollouts``, reward and KL curves as artifacts."""

from __future__ import annotations

import tempfile

from prefect import get_run_logger, task

from progra_core import grpo as core
from progra_core import rollout
from progra_core.config import PipelineConfig
from progra_core.curves import plot_curves
from progra_core.methods import recipe
from storage import DatasetRef, DatasetStore, fingerprint
from tasks._common import (
    Progress,
    dataset_cache_key,
    flow_run_id,
    policy_path,
    publish_curves,
    register_model,
)


def grpo_fingerprint(cfg: PipelineConfig, trajectories: DatasetRef, init: DatasetRef | None) -> str:
    r = recipe(cfg.method)
    payload = {"grpo": cfg.section("grpo"), "mode": r.grpo, "loss_type": r.loss_type(cfg.grpo.loss_type),
               "scale_rewards": r.scale_rewards(), "awareness_prompt": r.awareness_prompt, "policy": cfg.models.policy}
    return fingerprint(core.STAGE, payload, [trajectories.dataset_id, init.dataset_id if init else "base"], core.CODE_VERSION)


@task(name="grpo", cache_key_fn=dataset_cache_key, persist_result=True, log_prints=False)
def grpo(cfg: PipelineConfig, root: str, trajectories: DatasetRef, init: DatasetRef | None, output_stage: str = "models",
         dataset_id: str | None = None) -> DatasetRef:
    import pyarrow as pa

    store = DatasetStore(root)
    dataset_id = dataset_id or grpo_fingerprint(cfg, trajectories, init)
    if store.exists(output_stage, dataset_id):
        return store.ref(output_stage, dataset_id)
    r = recipe(cfg.method)
    rows = store.read(trajectories).to_pylist()
    if r.grpo == "single":
        episodes, rejects = rollout.single_step_episodes(rows)
    else:
        episodes, rejects = rollout.episodes_from_trajectories(rows, cfg.grpo.max_turns)
    episodes = core.select_episodes(episodes, cfg.grpo)
    adapter = store.read(init).to_pylist()[0]["adapter_path"] if init else None
    get_run_logger().info("grpo (%s rollouts, from %s): %d episodes, %d rejects", r.grpo, adapter or "base", len(episodes), len(rejects))
    with tempfile.TemporaryDirectory(prefix="progra-grpo-out-") as out:
        metrics, table = core.train_grpo(episodes, r, cfg.grpo, policy_path(cfg, root), adapter, out, run=dataset_id,
                                         progress=Progress("grpo-progress", cfg.grpo.max_steps))
        png = plot_curves(metrics["log_history"], ["reward", "kl", "rewards/reward_acc/mean"], f"{out}/curves.png",
                          f"PAG-RL ({r.name})")
        if png:
            publish_curves("grpo-curves", png, "reward and KL per step")
        store.write("rollouts", table.cast(core.ROLLOUTS) if table.num_rows else pa.Table.from_pylist([], schema=core.ROLLOUTS),
                    dataset_id=fingerprint("rollouts", {}, [dataset_id]), parents=[dataset_id], flow_run_id=flow_run_id(),
                    stats={"rows": table.num_rows})
        parents = [trajectories.dataset_id] + ([init.dataset_id] if init else [])
        return register_model(store, core.STAGE, dataset_id, out, base=cfg.models.policy, method=r.name, parents=parents,
                              config={"grpo": cfg.section("grpo"), "method": r.name}, code_version=core.CODE_VERSION,
                              metrics=metrics, rejects=rejects)
