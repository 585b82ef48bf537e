"""The paper's methods, baselines and ablations (§4.2, Table 3) as recipes: which SFT data, which
rollout, which loss, which starting point. ``PipelineConfig.method`` picks one; the train flow
reads the recipe and nothing else, so a baseline is a config value, not a code path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Recipe", "RECIPES", "recipe"]


@dataclass(frozen=True)
class Recipe:
    name: str
    sft: Literal["pag", "plain"] | None  # pag: D_sft = D_aug ∪ D_cs; plain: every train segment, calls only
    grpo: Literal["awareness", "raw", "single"] | None  # rollout mode (progra_core.train.rollout)
    grpo_from: Literal["sft", "base"] = "sft"  # the policy GRPO starts from (and its KL reference)
    dr_grpo: bool = False  # Dr. GRPO: TRL loss_type="dr_grpo" and no std scaling of advantages
    awareness_prompt: bool = False  # the policy is prompted for <summary> (training and evaluation)
    cot_prompt: bool = False  # prompted to think before answering (Reasoning baseline, at evaluation)
    reward_terms: tuple[str, ...] = ("fmt", "schema", "acc", "pen")  # the rubric (train.rewards.TERMS), Eq. 14 by default

    @property
    def continues_sft(self) -> bool:
        """GRPO keeps training the SFT adapter (so it has that adapter's LoRA shape)."""
        return bool(self.grpo and self.sft and self.grpo_from == "sft")

    def loss_type(self, configured: str) -> str:
        return "dr_grpo" if self.dr_grpo else configured

    def scale_rewards(self) -> str:
        return "none" if self.dr_grpo else "group"


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("reasoning", sft=None, grpo=None, cot_prompt=True),
    Recipe("sft", sft="plain", grpo=None),
    Recipe("st_grpo", sft=None, grpo="single", grpo_from="base", cot_prompt=True),
    Recipe("st_dr_grpo", sft=None, grpo="single", grpo_from="base", dr_grpo=True, cot_prompt=True),
    Recipe("mt_grpo", sft=None, grpo="raw", grpo_from="base", cot_prompt=True),
    Recipe("mt_dr_grpo", sft=None, grpo="raw", grpo_from="base", dr_grpo=True, cot_prompt=True),
    Recipe("progra", sft="pag", grpo="awareness", awareness_prompt=True),
    Recipe("wo_pag", sft=None, grpo="awareness", grpo_from="base", awareness_prompt=True),
    Recipe("wo_pag_rl", sft="pag", grpo=None, awareness_prompt=True),
    Recipe("pag_mt_grpo", sft="pag", grpo="raw", awareness_prompt=True),
    Recipe("sft_mt_grpo", sft="plain", grpo="raw", cot_prompt=True),  # Table 3: SFT, then MT-GRPO from its adapter
    # PAG-RL plus TARL's turn-level judge in the reward
    Recipe("progra_tarl", sft="pag", grpo="awareness", awareness_prompt=True, reward_terms=("fmt", "schema", "acc", "pen", "judge")),
]}


def recipe(method: str) -> Recipe:
    try:
        return RECIPES[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(RECIPES)}") from None
