"""Flow ``train`` (Fig. 3): the method's recipe, warm-up SFT on D_sft, then PAG-RL (or the
baseline's RL) from the warmed-up policy; each a GPU stage (``flows.dispatch.gpu_stage``).

It takes dataset/model ids, never data, so a GPU work pool can run either stage on its own box.
"""

from __future__ import annotations

from prefect import flow

from flows.dispatch import gpu_stage
from progra_core.config import PipelineConfig, load_config
from progra_core.methods import recipe
from storage import DatasetRef, DatasetStore
from tasks.stage import ancestor


@flow(name="train", log_prints=True)
def train_flow(examples_id: str, config: PipelineConfig | None = None, profile: str = "embedded") -> dict[str, DatasetRef]:
    """The method's recipe: [sft] -> [grpo from the SFT adapter or from the base model], each on
    the GPU pool when ``dispatch.mode`` is ``work_pool``."""
    cfg = config or load_config(profile)
    r = recipe(cfg.method)
    store = DatasetStore(cfg.storage.root)
    examples = store.find(examples_id)
    if examples.stage != "sft_examples":
        raise ValueError(f"{examples_id} is a {examples.stage!r} dataset, not 'sft_examples'")
    out: dict[str, DatasetRef] = {}
    warm = gpu_stage(cfg, "sft", examples.dataset_id).get("sft") if r.sft else None  # π_θ'
    if warm is not None:
        out["sft"] = warm
    if r.grpo:  # PAG-RL from π_θ' (its KL reference) or, for the from-base baselines, from the base policy
        init = warm.dataset_id if (r.grpo_from == "sft" and warm is not None) else None
        out |= gpu_stage(cfg, "grpo", ancestor(store, examples, "trajectories").dataset_id, init)
    return out
