"""Flow ``train`` (Fig. 3): the method's recipe, warm-up SFT on D_sft, then PAG-RL (or the
baseline's RL) from the warmed-up policy; each a GPU stage (``flows.dispatch.dispatch_stage``).

It takes dataset refs, never data; a GPU work pool gets their ids and runs either stage on its own box.
"""

from __future__ import annotations

from prefect import flow

from flows.dispatch import dispatch_stage
from progra_core.config import PipelineConfig, load_config
from progra_core.methods import recipe
from storage import DatasetRef, DatasetStore
from tasks.runtime import refresh_catalog
from tasks.stage_tasks import ancestor


@flow(name="train", log_prints=True)
def train_flow(examples: DatasetRef, config: PipelineConfig | None = None, profile: str = "embedded") -> dict[str, DatasetRef]:
    """The method's recipe: [sft] -> [grpo from the SFT adapter or from the base model], each on
    the GPU pool when ``dispatch.mode`` is ``work_pool``."""
    cfg = config or load_config(profile)
    r = recipe(cfg.method)
    if examples.stage != "sft_examples":
        raise ValueError(f"{examples.dataset_id} is a {examples.stage!r} dataset, not 'sft_examples'")
    out: dict[str, DatasetRef] = {}
    warm = dispatch_stage(cfg, "sft", examples).get("sft") if r.sft else None  # π_θ'
    if warm is not None:
        out["sft"] = warm
    if r.grpo:  # PAG-RL from π_θ' (its KL reference) or, for the from-base baselines, from the base policy
        init = warm if r.grpo_from == "sft" else None
        trajectories = ancestor(DatasetStore(cfg.storage.root), examples, "trajectories")
        out |= dispatch_stage(cfg, "grpo", trajectories, init=init)
    refresh_catalog(cfg)
    return out
