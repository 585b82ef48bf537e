"""``PipelineConfig``: a section per stage (:mod:`.data`, :mod:`.train`, :mod:`.evaluate`) and the
shared ones (:mod:`.runtime`). The Prefect UI renders it as a form.

Each stage's dataset fingerprint hashes only that stage's own section (plus parents and code
version), so editing ``verify.*`` recomputes verify and what follows, nothing upstream.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from progra_core.config.base import ANSWER_TOKENS, Section
from progra_core.config.data import (
    AugmentConfig,
    AwarenessConfig,
    IngestConfig,
    SegmentConfig,
    SFTDataConfig,
    SynthesizeConfig,
    VerifyConfig,
)
from progra_core.config.evaluate import EvaluateConfig
from progra_core.config.runtime import DispatchConfig, LLMConfig, ModelsConfig, StorageConfig
from progra_core.config.train import GRPOConfig, LaunchConfig, SFTConfig, TrackingConfig
from progra_core.envs import registry
from progra_core.envs.base import EnvError
from progra_core.methods import RECIPES

__all__ = ["PipelineConfig"]


class PipelineConfig(Section):
    """The whole pipeline. A section per stage; only a stage's own section enters its fingerprint."""

    profile: str = Field("embedded", description="Profile this config came from.")
    method: Literal[
        "progra", "reasoning", "sft", "st_grpo", "st_dr_grpo", "mt_grpo", "mt_dr_grpo", "wo_pag", "wo_pag_rl", "pag_mt_grpo",
        "sft_mt_grpo", "progra_tarl",
    ] = Field("progra", description="Method / baseline / ablation to run.")
    tool_docs: Literal["json", "compact"] = Field("json", description=(
        "How the policy is shown tool docs, the same in SFT, RL and evaluation: json (bfcl-eval's own rendering) or "
        "compact (one line per function with types, enums and required flags: short prompts for small models)."))
    storage: StorageConfig = StorageConfig()
    models: ModelsConfig = ModelsConfig()
    llm: LLMConfig = LLMConfig()
    ingest: IngestConfig = IngestConfig()
    synthesize: SynthesizeConfig = SynthesizeConfig()
    segment: SegmentConfig = SegmentConfig()
    awareness: AwarenessConfig = AwarenessConfig()
    verify: VerifyConfig = VerifyConfig()
    augment: AugmentConfig = AugmentConfig()
    sft_data: SFTDataConfig = SFTDataConfig()
    sft: SFTConfig = SFTConfig()
    grpo: GRPOConfig = GRPOConfig()
    tracking: TrackingConfig = TrackingConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    dispatch: DispatchConfig = DispatchConfig()
    envs: dict[str, str | dict[str, Any]] = Field(default_factory=dict, description=(
        "Your own environments, by the name trajectories use in their env column: 'my_envs/shop.py:Shop' or "
        "'my_envs.shop:Shop' (a Python class whose public methods are the tools), {mcp: {command: [...]} | {url, "
        "reset_tool}, state_resource?} (an MCP server), or 'module:KIND' (an EnvKind). Loaded in every process "
        "that builds envs; see docs/environments.md."))

    @field_validator("envs")
    @classmethod
    def _absolute_env_files(cls, v: dict[str, Any]) -> dict[str, Any]:
        """A ``file.py:Class`` relative to where the config was loaded, made absolute: worker
        processes and Prefect workers load it from elsewhere."""
        def fix(ref: Any) -> Any:
            if isinstance(ref, str) and (path := ref.rpartition(":")[0]).endswith(".py") and not os.path.isabs(path):
                return f"{os.path.abspath(path)}:{ref.rpartition(':')[2]}"
            return ref

        return {name: ({"python": fix(spec["python"])} if isinstance(spec, dict) and set(spec) == {"python"} else fix(spec))
                for name, spec in v.items()}

    @model_validator(mode="after")
    def _load_envs(self) -> PipelineConfig:
        """Register the config's environments in this process (a bad one fails the load, named)."""
        self.register_envs()
        return self

    def register_envs(self) -> None:
        for name, spec in self.envs.items():
            try:
                registry.use(name, spec)
            except EnvError as e:
                raise ValueError(f"envs.{name}: {e}") from None

    def __setstate__(self, state: Any) -> None:
        """A config unpickled in another process (a Dask/Ray worker, a training job) loads its envs there too."""
        super().__setstate__(state)
        self.register_envs()

    @model_validator(mode="after")
    def _budgets_agree(self) -> PipelineConfig:
        """An action in RL holds the awareness note SFT taught (summary, plan, rationale: up to
        ``awareness.max_tokens``) plus the think and answer; a smaller action budget cuts it."""
        r = RECIPES.get(self.method)
        need = self.awareness.max_tokens + ANSWER_TOKENS
        if r is not None and r.grpo and (r.awareness_prompt or r.grpo == "awareness") and self.grpo.max_action_tokens < need:
            raise ValueError(f"grpo.max_action_tokens ({self.grpo.max_action_tokens}) is smaller than awareness.max_tokens "
                             f"({self.awareness.max_tokens}) + {ANSWER_TOKENS} for the think and answer: {self.method}'s "
                             f"actions would be cut mid-note and score no TEMPLATE; raise it to at least {need}")
        if r is not None and r.continues_sft:  # refused at load, not after hours of SFT
            self.grpo.lora_shape((self.sft.lora_r, self.sft.lora_alpha))
        return self

    def section(self, name: str) -> dict[str, Any]:
        """A stage's own section as plain JSON data (what enters its fingerprint). A one-process
        ``launch`` is left out: a one-process model's id does not depend on the section; so are
        checkpoint settings (:data:`NOT_IN_ID`): saving more often trains the same model."""
        out = json.loads(getattr(self, name).model_dump_json())
        if out.get("launch") == _ONE_PROCESS:
            del out["launch"]
        for key in NOT_IN_ID:
            out.pop(key, None)
        return out


_ONE_PROCESS = LaunchConfig().model_dump(mode="json")
#: fields that decide how a stage runs, not what it makes: left out of its fingerprint
NOT_IN_ID = ("save_steps", "save_total_limit")
