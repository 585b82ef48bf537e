"""The data stages' sections (§3.1–3.2, APIGen-MT-style synthesis): ingest, synthesize,
segment, awareness, verify, augment and sft_data."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from progra_core.config.base import Section, known_bfcl_categories
from progra_core.envs.bfcl import BFCL_CLASSES
from progra_core.envs.tau2 import DOMAINS, TRAIN_DOMAINS

__all__ = ["IngestConfig", "SynthesizeConfig", "SegmentConfig", "AwarenessConfig", "VerifyConfig", "AugmentConfig", "SFTDataConfig"]


class IngestConfig(Section):
    bfcl_categories: list[str] = Field(["base"], description="BFCL multi-turn categories to ingest.")
    bfcl_split: Literal["train", "held_out", "all"] = Field("train", description="Which side of the split to ingest.")
    held_out_percent: int = Field(50, ge=0, le=100, description="Share of BFCL scenarios held out for evaluation.")
    step_mode: Literal["per_call", "per_turn"] = Field("per_call", description="Ground-truth calls: one step each, or one parallel step per turn.")
    limit: int | None = Field(None, ge=0, description="Max BFCL entries (after the split).")
    jsonl: list[str] = Field(default_factory=list, description="Extra trajectories: OpenAI chat-format JSONL files.")
    hf: list[str] = Field(default_factory=list, description="Extra trajectories: local datasets.save_to_disk folders.")
    tau2_domains: list[str] = Field(default_factory=list, description=(
        "tau2-bench domains whose train-split tasks become trajectories (reference actions executed in the env). "
        "airline and retail only: telecom is the out-of-domain test and never trains."))
    tau2_limit: int | None = Field(None, ge=0, description="Train tasks per tau2 domain (None: all).")

    _cats = field_validator("bfcl_categories")(known_bfcl_categories)

    @field_validator("tau2_domains")
    @classmethod
    def _tau2(cls, v: list[str]) -> list[str]:
        if "telecom" in v:
            raise ValueError("tau2 telecom is the out-of-domain test set (the paper's Table 3) and cannot be used for "
                             f"training; train on {list(TRAIN_DOMAINS)} and evaluate on telecom with evaluate.tau2_domains")
        bad = [d for d in v if d not in DOMAINS]
        if bad:
            raise ValueError(f"unknown tau2 domains {bad}; training domains are {list(TRAIN_DOMAINS)}")
        return v


class SynthesizeConfig(Section):
    """Appendix B (after APIGen-MT). Roles: ``models.generator`` writes configs and queries,
    ``models.action`` the K candidates, ``models.reviewer`` judges read-only turns."""

    enabled: bool = Field(False, description="Run APIGen-MT-style synthesis and mix its trajectories into D.")
    env: str = Field("bfcl", description=(
        "Environment to synthesize in: bfcl (seed configs from BFCL's train entries) or a plugin named in the "
        "config's envs (seed configs from seeds)."))
    seeds: list[dict[str, Any]] = Field(default_factory=list, description=(
        "A plugin env's seed initial_configs (its constructor arguments / its server's episode config): the "
        "generator is shown some and writes new ones."))
    attempts: int = Field(4, ge=0, description="Trajectory attempts per run.")
    involved_classes: list[list[str]] = Field(default_factory=list, description="Class sets to synthesize for, used in turn; empty = sample the sets of BFCL train entries.")
    exemplars: int = Field(3, ge=1, description="k exemplar initial_configs shown to the generator.")
    max_iterations: int = Field(4, ge=1, description="Config-generation tries, each failure's error fed back (paper: 4).")
    turns: int = Field(3, ge=1, description="Turns per trajectory attempt.")
    min_turns: int = Field(1, ge=1, description="Keep a verified prefix only if it has at least this many turns.")
    candidates: int = Field(5, ge=1, description="K parallel action candidates for the majority vote.")
    vote_threshold: float = Field(0.5, gt=0, le=1, description="Share of the K candidates the (unique) largest group needs.")
    reviewers: int = Field(5, ge=1, description="R reviewers for read-only turns (paper: 5); a strict majority of yes passes.")
    temperature: float = Field(0.7, ge=0, description="Generator temperature (configs, queries).")
    action_temperature: float = Field(0.7, ge=0, description="Action candidates: above 0 so the K votes are independent samples.")
    reviewer_temperature: float = Field(0.7, ge=0, description="Reviewers: above 0 so the R verdicts are independent samples.")
    config_max_tokens: int = Field(768, ge=16)
    query_max_tokens: int = Field(128, ge=8)
    action_max_tokens: int = Field(192, ge=8)
    guided: bool = Field(True, description="local/ models: configs keep an exemplar's structure with the prose rewritten, "
                                           "action candidates use grammar-guided call decoding (both always parse).")
    max_calls: int = Field(4, ge=1, description="Most calls a guided candidate may list.")
    concurrency: int = Field(16, ge=1, description="Attempts in flight (a wave; also the resume granularity).")
    step_mode: Literal["per_call", "per_turn"] = Field("per_call", description="Accepted calls: one step each, or one parallel step per turn.")
    seed: int = Field(0, description="Sampling seed: a new seed gives new attempts (nightly refresh).")
    mix: float = Field(1.0, ge=0, le=1, description="Share of accepted synthesized trajectories put into D.")
    keep_ingested: bool = Field(True, description="D = ingested + synthesized; false = synthesized only.")

    @model_validator(mode="after")
    def _classes(self) -> SynthesizeConfig:
        v = self.involved_classes
        if self.env != "bfcl":
            if self.enabled and not self.seeds:
                raise ValueError(f"synthesize.env={self.env}: give synthesize.seeds (example initial_configs of the env)")
            return self
        bad = sorted({c for s in v for c in s} - set(BFCL_CLASSES))
        if bad or any(not s for s in v):
            raise ValueError(f"unknown or empty BFCL class sets {bad or v}; known classes {sorted(BFCL_CLASSES)}")
        return self


class SegmentConfig(Section):
    include_observations: bool = Field(True, description="Keep observations in c_his/c_fut.")


class AwarenessConfig(Section):
    generator: Literal["llm", "template"] = Field("llm", description=(
        "Who writes S^a: 'llm' = models.generator (the paper's GPT-4o role); 'template' = written from the segment "
        "itself (progress of earlier turns, the request, a_fc and the rest of the turn in words), no model: a "
        "zero-cost bootstrap and a baseline. Verification decides what is kept either way."))
    prompt_version: str = "v2"
    max_attempts: int = Field(3, ge=1, description="Retries on unparsable output or literal calls (reason fed back).")
    temperature: float = 0.3
    max_tokens: int = Field(384, ge=16, description="Token budget of one answer (split across sections when guided).")
    shard_size: int = Field(64, ge=1, description="Segments per shard (resume granularity).")
    limit: int | None = Field(None, ge=0, description="Max segments to annotate.")
    select: Literal["first", "shortest"] = Field(
        "first", description="Which segments a limit keeps: first by id, or those with the least context (cheap runs).")
    guided: bool = Field(True, description="local/ models: generate section by section with the tags prefilled.")
    tools: Literal["all", "used"] = Field(
        "all", description="Tool docs in the prompt: all of info_meta, or only the functions this trajectory calls (short prompts).")
    future_chars: int = Field(2000, ge=0, description="c_fut shown to the generator, clipped to this many characters.")
    repetition_penalty: float = Field(1.0, ge=1.0, description="local/ models only (HF semantics: also penalises prompt tokens, so keep near 1).")


class VerifyConfig(Section):
    temperature: float = 0.0
    max_tokens: int = 128
    guided: bool = Field(True, description="local/ models: grammar-guided call decoding (function and argument names "
                                           "picked from the tool schema by likelihood, values generated).")
    max_calls: int = Field(3, ge=1, description="Most calls a guided answer may list.")
    call_by_call: bool = Field(
        True, description="Guided verifier, a_fc of several calls: rebuild it one call at a time, each after the "
                          "earlier calls of a_fc, the last free to close or go on; the note passes when every call "
                          "matches. A 135M verifier closes a list after its first call whatever the plan says, so "
                          "without this no multi-call turn is ever verified.")
    shard_size: int = Field(64, ge=1, description="Awareness rows per shard (resume granularity).")


class AugmentConfig(Section):
    weights: dict[str, float] = Field({"paraphrase": 1.0, "schema_perturb": 1.0, "word_mask": 1.0}, description="Op sampling weights.")
    ops_per_row: int = Field(1, ge=1, le=3, description=(
        "Distinct ops per verified row, drawn by weight without replacement (the paper: 1). More variants of what "
        "verification kept, where verification is the scarce step (the embedded profile: 2)."))
    mask_fraction: float = Field(0.15, ge=0, le=1)
    keep_original: bool = True
    seed: int = 0
    shard_size: int = Field(64, ge=1, description="Verified rows per shard (resume granularity).")


class SFTDataConfig(Section):
    cold_start_ratio: float = Field(0.5, ge=0, description="Cold-start examples per awareness example.")
    cold_start_min: int = Field(16, ge=0, description="At least this many cold-start examples (keeps D_sft non-empty).")
    validation_percent: int = Field(10, ge=0, le=100)
    turn_ends: bool = Field(True, description=(
        "Add a turn-end example per turn of the trajectories used: the prompt after the turn's last call and its "
        "result, the target a plain answer. BFCL turns carry no reply; without these the policy never learns to end a turn."))
    turn_end_ratio: float | None = Field(None, ge=0, description=(
        "Turn-end examples per call example (awareness + cold-start); None: one per turn of every trajectory used. "
        "Turns that a call example comes from are kept first, so the taught call and its end stay together."))
    seed: int = 0

