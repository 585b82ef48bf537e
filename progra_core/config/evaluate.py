"""The evaluation section: BFCL multi-turn and τ²-bench (§4.2)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from progra_core.config.base import Section, known_bfcl_categories
from progra_core.envs.tau2 import DOMAINS

__all__ = ["EvaluateConfig"]


class EvaluateConfig(Section):
    """§4.2: BFCL multi-turn, run as bfcl-eval runs prompting models, scored as its checker does."""

    models: list[str] = Field(["base", "trained"], description=(
        "Models under test: 'base' (models.policy), 'reasoning' (base + CoT prompt), 'trained' (this run's "
        "final model), a model_id from the models view, or a LiteLLM model string (e.g. hosted_vllm/{m})."))
    api_base: str | None = Field(None, description="api_base for LiteLLM models under test (a `vllm serve` box).")
    api_key_env: str | None = Field(None, description="Env var holding the API key of LiteLLM models under test.")
    api_key_secret: str | None = Field(None, description="Prefect Secret block holding that key (wins over api_key_env).")
    categories: list[str] = Field(["base", "miss_func", "miss_param"], description="BFCL multi-turn categories (Table 1).")
    split: Literal["held_out", "train", "all"] = Field("held_out", description="Which side of the BFCL split to test on.")
    limit: int | None = Field(None, ge=0, description="Entries per category (None: all on the split).")
    select: Literal["first", "shortest"] = Field("first", description="Which entries a limit keeps: BFCL order, or the smallest prompts.")
    trials: int = Field(3, ge=1, description="Runs per entry, averaged (paper: 3). Sampled when temperature > 0.")
    temperature: float = Field(0.001, ge=0, description="Sampling temperature (bfcl-eval's default: 0.001).")
    max_tokens: int = Field(1024, ge=8, description="New tokens per step.")
    max_steps_per_turn: int = Field(20, ge=1, description="More steps than this in one turn force-quits the entry (BFCL: 20).")
    prompt: Literal["bfcl", "policy"] = Field("bfcl", description=(
        "bfcl: bfcl-eval's default system prompt for every method (the paper's test setting; on tau2 the "
        "domain policy and tools in the same call format); policy: the prompt the policy was trained with."))
    seed: int = 0
    tau2_domains: list[str] = Field(default_factory=list, description=(
        "tau2-bench domains to evaluate on as well (airline, retail: Table 1; telecom: Table 3's out-of-domain test)."))
    tau2_split: Literal["test", "train", "base"] = Field("test", description="Split of the package's split_tasks.json.")
    tau2_limit: int | None = Field(None, ge=0, description="Tasks per tau2 domain (None: the whole split).")
    tau2_max_steps: int = Field(100, ge=2, description="Messages per tau2 conversation before it ends unfinished (tau2: 100).")
    tau2_max_errors: int = Field(10, ge=1, description="Failed tool calls per tau2 conversation before it ends (tau2: 10).")
    user_temperature: float = Field(0.0, ge=0, description="User simulator temperature (tau2's default: 0).")
    user_max_tokens: int = Field(256, ge=8, description="New tokens per user-simulator message.")
    next_call_limit: int = Field(0, ge=0, description=(
        "Held-out next-call cases: this many call steps (and a quarter as many turn ends) of held-out BFCL base "
        "scenarios, shortest prompts first, each answered once with the training prompt (0: off)."))
    held_out: list[str] = Field(default_factory=list, description=(
        "Held-out trajectories of your own envs (chat-format JSONL files or HF folders whose records name an env of "
        "the config's envs): each is played turn by turn in its env (per-turn and entry success, as BFCL scores) and "
        "cut into next-call cases (every call step and turn end), with the training prompt. Never trained on."))
    held_out_limit: int | None = Field(None, ge=0, description="Held-out trajectories per file (None: all).")
    next_call_max_tokens: int = Field(256, ge=8, description="New tokens per next-call answer (a note, a think and the calls).")
    forced_answer_tokens: int = Field(0, ge=0, description=(
        "Budget forcing for local models (next-call and BFCL alike, every subject): an answer cut for length or a "
        "loop inside its summary or think section is continued once with its loop cut, the section closed and the "
        "answer section opened, for this many new tokens (0: off; scored as it was cut)."))

    _cats = field_validator("categories")(known_bfcl_categories)

    @field_validator("tau2_domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if d not in DOMAINS]
        if bad:
            raise ValueError(f"unknown tau2 domains {bad}; allowed {list(DOMAINS)}")
        return v

    @model_validator(mode="after")
    def _something(self) -> EvaluateConfig:
        if not self.categories and not self.tau2_domains and not self.next_call_limit and not self.held_out:
            raise ValueError("evaluate needs BFCL categories, tau2_domains, next_call_limit or held_out (all are empty)")
        return self

