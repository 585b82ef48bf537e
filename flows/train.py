"""Flows ``sft`` and ``grpo`` (the GPU stages of Fig. 2) and ``train``, which runs the method's
recipe: warm-up SFT on D_sft, then PAG-RL (or the baseline's RL) from the warmed-up policy.

Each flow takes dataset/model ids, never data, so a GPU work pool can run it on its own box.
"""

from __future__ import annotations

from prefect import flow

from flows.dispatch import gpu_stage
from progra_core.config import PipelineConfig, load_config
from progra_core.methods import recipe
from storage import Catalog, DatasetRef, DatasetStore
from tasks._common import ancestor
from tasks.grpo import grpo as grpo_task
from tasks.grpo import grpo_fingerprint
from tasks.sft import sft as sft_task
from tasks.sft import sft_fingerprint


def _ref(store: DatasetStore, dataset_id: str, stage: str) -> DatasetRef:
    ref = store.find(dataset_id)
    if ref.stage != stage:
        raise ValueError(f"{dataset_id} is a {ref.stage!r} dataset, not {stage!r}")
    return ref


@flow(name="sft", log_prints=True)
def sft(examples_id: str, config: PipelineConfig | None = None, profile: str = "embedded") -> DatasetRef | None:
    """Warm-up SFT (§3.2) on an ``sft_examples`` dataset; None when the method trains no SFT."""
    cfg = config or load_config(profile)
    if recipe(cfg.method).sft is None:
        return None
    store = DatasetStore(cfg.storage.root)
    examples = _ref(store, examples_id, "sft_examples")
    ref = sft_task(cfg, cfg.storage.root, examples, dataset_id=sft_fingerprint(cfg, examples))
    Catalog(cfg.storage.root, cfg.storage.catalog_path).refresh()
    return ref


@flow(name="grpo", log_prints=True)
def grpo(trajectories_id: str, init_model_id: str | None = None, config: PipelineConfig | None = None,
         profile: str = "embedded") -> DatasetRef | None:
    """PAG-RL (§3.3) on the episodes of a ``trajectories`` dataset, from a registered adapter
    (``init_model_id``) or the base policy; None when the method has no RL stage."""
    cfg = config or load_config(profile)
    if recipe(cfg.method).grpo is None:
        return None
    store = DatasetStore(cfg.storage.root)
    trajectories = _ref(store, trajectories_id, "trajectories")
    init = _ref(store, init_model_id, "models") if init_model_id else None
    ref = grpo_task(cfg, cfg.storage.root, trajectories, init, dataset_id=grpo_fingerprint(cfg, trajectories, init))
    Catalog(cfg.storage.root, cfg.storage.catalog_path).refresh()
    return ref


@flow(name="train", log_prints=True)
def train_flow(examples_id: str, config: PipelineConfig | None = None, profile: str = "embedded") -> dict[str, DatasetRef]:
    """The method's recipe: [sft] -> [grpo from the SFT adapter or from the base model], each on
    the GPU pool when ``dispatch.mode`` is ``work_pool``."""
    cfg = config or load_config(profile)
    r = recipe(cfg.method)
    store = DatasetStore(cfg.storage.root)
    examples = _ref(store, examples_id, "sft_examples")
    out: dict[str, DatasetRef] = {}
    warm = gpu_stage(cfg, "sft", examples.dataset_id).get("sft") if r.sft else None
    if warm is not None:
        out["sft"] = warm
    if r.grpo:
        init = warm.dataset_id if (r.grpo_from == "sft" and warm is not None) else None
        out |= gpu_stage(cfg, "grpo", ancestor(store, examples, "trajectories").dataset_id, init)
    return out
