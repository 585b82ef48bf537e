"""The config schema: one pydantic section per stage, LLM roles as LiteLLM model strings,
storage and dispatch, and ``PipelineConfig`` holding them all (the Prefect UI renders it as a form).

Each stage's dataset fingerprint hashes only that stage's own section (plus parents and code
version), so editing ``verify.*`` recomputes verify and what follows, nothing upstream.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from progra_core.envs.bfcl import BFCL_CLASSES
from progra_core.envs.tau2 import DOMAINS, TRAIN_DOMAINS
from progra_core.methods import RECIPES

__all__ = ["Section", "StorageConfig", "ModelsConfig", "LLMConfig", "IngestConfig", "SynthesizeConfig", "SegmentConfig", "AwarenessConfig", "VerifyConfig", "AugmentConfig", "SFTDataConfig", "SFTConfig", "GRPOConfig", "EvaluateConfig", "DispatchConfig", "PipelineConfig",
           "LaunchConfig", "BFCL_CATEGORIES", "ANSWER_TOKENS", "check_micro_batch"]

BFCL_CATEGORIES = ("base", "miss_func", "miss_param", "long_context")
#: Tokens an action needs besides its awareness note: the think and the call list.
ANSWER_TOKENS = 64


def _bfcl_categories(cls, v: list[str]) -> list[str]:
    """BFCL multi-turn categories, checked the same way wherever a section names some."""
    bad = [c for c in v if c not in BFCL_CATEGORIES]
    if bad:
        raise ValueError(f"unknown BFCL categories {bad}; allowed {list(BFCL_CATEGORIES)}")
    return v


class Section(BaseModel):
    """strict: no coercion (``true`` is not 50 %, ``no`` is not a model name, ``"1"`` is not 1;
    an int is still a float); no NaN or infinity in any number."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


class StorageConfig(Section):
    root: str = Field("./.progra", description="Storage root: a local folder or an fsspec URL (s3://..., memory://...).")
    catalog_path: str | None = Field(None, description="DuckDB file; default <root>/catalog.duckdb for local roots.")


class ModelsConfig(Section):
    """Every LLM role is a LiteLLM model string (``openai/gpt-4o``, ``hosted_vllm/<m>``) or
    ``local/<name>`` (in-process transformers; ``local/smollm2`` is the embedded model)."""

    policy: str = Field("local/smollm2", description="Target policy base model (path, HF id or local/<name>).")
    generator: str = Field("local/smollm2", description="LLM_gen: writes awareness (S^a) and synthesis configs/queries.")
    verifier: str = Field("policy", description=(
        "LLM_ver: the frozen target policy that rebuilds a_fc from S^a. 'policy' (default) = models.policy itself: "
        "in-process when it is local/<name>, else as served at api_base.verifier (hosted_vllm/<policy>); or any model string."))
    augmenter: str = Field("local/smollm2", description="LLM_aug: paraphrases awareness text.")
    action: str = Field("local/smollm2", description="Synthesis action voters.")
    reviewer: str = Field("local/smollm2", description="Synthesis reviewers for read-only turns.")
    user_simulator: str = Field("local/smollm2", description="User simulator for tau2-bench evaluation.")
    judge: str = Field("local/smollm2", description="Turn-level judge (TARL): scores each finished RL turn -1/0/1 "
                                                   "for methods whose reward has the judge term (progra_tarl).")
    api_base: dict[str, str] = Field(default_factory=dict, description="Per-role api_base, e.g. {generator: http://gpu:8000/v1}.")
    api_key_env: dict[str, str] = Field(default_factory=dict, description="Per-role env var holding the API key (never the key).")
    api_key_secret: dict[str, str] = Field(default_factory=dict, description=(
        "Per-role Prefect Secret block holding the API key, read on the worker at run time (wins over api_key_env)."))

    @model_validator(mode="after")
    def _verifier_is_the_policy(self):
        """Resolve ``verifier: policy`` so that changing the policy changes the verifier with it."""
        if self.verifier != "policy":
            return self
        if self.policy.startswith("local/"):
            self.verifier = self.policy
        elif "verifier" in self.api_base:
            self.verifier = f"hosted_vllm/{self.policy}"
        else:
            raise ValueError(f"models.verifier=policy: the policy {self.policy!r} is not local/<name>, so the verifier needs "
                             "it served: set models.api_base.verifier to its `vllm serve` URL, or name models.verifier")
        return self


class LLMConfig(Section):
    concurrency: int = Field(8, ge=1, description="Requests in flight per endpoint, shared by all shard tasks of a process.")
    global_limit: bool = Field(False, description=(
        "Hold llm.concurrency per endpoint across every worker (Dask/Ray processes, pods, parallel runs) with a "
        "Prefect global concurrency limit on the Prefect server they share; costs one lease round trip per request."))
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(6, ge=0, description="Retries on 429/5xx/timeouts/connection errors.")
    backoff_initial_s: float = Field(0.5, gt=0, description="First backoff (exponential with full jitter).")
    backoff_max_s: float = Field(30.0, gt=0, description="Backoff cap.")
    cache: bool = Field(True, description="Persistent response cache under <root>/llm_cache: a rerun never asks twice.")
    shard_retries: int = Field(2, ge=0, description=(
        "Times a shard whose endpoint stayed down past max_retries is tried again (cached answers replay, only the rest is asked)."))
    shard_retry_delay_s: float = Field(30.0, ge=0, description="Wait before such a shard retry (lets a rate-limit window pass).")
    local_batch_size: int = Field(8, ge=1, description="Requests per forward pass for local/ models.")
    local_batch_tokens: int | Literal["auto"] | None = Field("auto", description=(
        "local/ models: most padded prompt tokens (rows x longest prompt) per forward pass; long prompts go alone. "
        "auto: 8192 on CPU (padding a batch to a long prompt costs more than it saves), on CUDA what half the memory "
        "left after loading the model holds (KV cache + activations). None: batch_size alone decides."))
    local_prefix_cache_mb: int = Field(2048, ge=0, description=(
        "local/ models: memory for KV caches of prompts already computed (an LRU, MiB of tensors), so a "
        "prompt sharing a prefix with an earlier one (the docs of every BFCL step, a turn's conversation, "
        "guided decoding's successive questions) computes only the rest; 0 turns reuse off. SmolLM2-135M in "
        "float32 holds ~46 KiB per token: 2048 MiB is ~45k tokens"))
    local_static_cache: bool = Field(True, description=(
        "local/ models: decode into a preallocated KV cache written in place (transformers StaticCache) instead of "
        "one that is copied whole at every new token; same tokens, and about half a decode step saved at a 4.6k-token "
        "prompt on CPU. Models with sliding-window or non-attention layers always use the dynamic cache."))
    local_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description=(
        "local/ models' weights: auto = bfloat16 on a CUDA device that supports it, float32 on CPU."))


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

    _cats = field_validator("bfcl_categories")(_bfcl_categories)

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

    @field_validator("involved_classes")
    @classmethod
    def _classes(cls, v: list[list[str]]) -> list[list[str]]:
        bad = sorted({c for s in v for c in s} - set(BFCL_CLASSES))
        if bad or any(not s for s in v):
            raise ValueError(f"unknown or empty BFCL class sets {bad or v}; known classes {sorted(BFCL_CLASSES)}")
        return v


class SegmentConfig(Section):
    include_observations: bool = Field(True, description="Keep observations in c_his/c_fut.")


class AwarenessConfig(Section):
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
    shard_size: int = Field(64, ge=1, description="Awareness rows per shard (resume granularity).")


class AugmentConfig(Section):
    weights: dict[str, float] = Field({"paraphrase": 1.0, "schema_perturb": 1.0, "word_mask": 1.0}, description="Op sampling weights.")
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
    seed: int = 0


class LaunchConfig(Section):
    """How a training stage uses more than one device: one process trains in the stage's own
    process; more run as one ``accelerate launch`` job (one process per GPU; gloo CPU processes
    where there is none) that the stage launches, watches and registers one adapter from."""

    num_processes: int = Field(1, ge=1, description=(
        "Training processes. 1: train in the stage's process. >1: an `accelerate launch` job with this many "
        "processes (one per GPU of the node); the effective batch stays the section's batch_size."))
    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field("ddp", description=(
        "ddp: every process holds the whole model (policies that fit one device). fsdp / deepspeed: shard weights, "
        "gradients and optimizer state over the processes (configs/accelerate/fsdp.yaml, deepspeed_zero3.yaml; "
        "GPU only, deepspeed needs `pip install deepspeed`)."))
    config_file: str | None = Field(None, description=(
        "An accelerate config YAML used instead of the strategy's (e.g. one written by `accelerate config`); "
        "num_processes still comes from this section."))
    main_process_port: int = Field(0, ge=0, le=65535, description="Rendezvous port on 127.0.0.1 (0: a free one).")
    timeout_s: int = Field(48 * 3600, ge=1, description="Longest the job may run; past it the job is killed and the stage fails.")

    def per_device(self, batch: int, micro: int | None, what: str) -> tuple[int, int]:
        """(examples per device per pass, accumulated passes) so that device passes x processes x
        accumulation = ``batch``, the configured effective batch."""
        n = self.num_processes
        per = micro or batch // n
        if per < 1 or batch % (per * n):
            raise ValueError(f"{what} {batch} must be a multiple of micro_batch_size ({micro or 'unset'}) x "
                             f"launch.num_processes {n}: the effective batch would change")
        return per, batch // (per * n)


class SFTConfig(Section):
    """LoRA warm-up (§3.2, §4.3). The paper searched rank 8-16, alpha 8-64, lr 1e-7 to 1e-6 and
    batch 8-16 on 3-8B models; the embedded profile uses values that move a 135M model in a few steps."""

    lora_r: int = Field(8, ge=1, description="LoRA rank (paper search: 8-16).")
    lora_alpha: int = Field(16, ge=1, description="LoRA alpha (paper search: 8-64).")
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    learning_rate: float = Field(1e-6, gt=0, description="Paper search: 1e-7 to 1e-6 on 3-8B models.")
    batch_size: int = Field(8, ge=1, description="Examples per optimizer step (paper search: 8-16).")
    micro_batch_size: int | None = Field(None, ge=1, description=(
        "Examples per forward/backward pass; batch_size / micro_batch_size passes are accumulated into one step, so the "
        "effective batch stays batch_size (None: batch_size, no accumulation)."))
    gradient_checkpointing: Literal["auto", "on", "off"] = Field("auto", description=(
        "Recompute activations in the backward pass instead of keeping them: auto = on CUDA (activations dominate "
        "long-context memory there), off on CPU (a 135M model's activations are small; checkpointing costs ~30 % time)."))
    max_steps: int = Field(200, ge=1, description="Optimizer steps.")
    warmup_steps: int = Field(0, ge=0)
    lr_scheduler: Literal["linear", "cosine", "constant"] = "linear"
    max_length: int = Field(16384, ge=64, description="Tokens per example; longer ones lose their oldest history first.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description=(
        "auto: bf16 autocast on a bf16 CUDA device or a CPU with AMX tiles (about 2x faster here), else fp32. On CUDA "
        "with bf16 the base weights also load in bf16 (half the memory); on CPU they stay fp32."))
    launch: LaunchConfig = LaunchConfig()

    @model_validator(mode="after")
    def _micro(self):
        check_micro_batch(self.batch_size, self.micro_batch_size, "sft.batch_size")
        self.launch.per_device(self.batch_size, self.micro_batch_size, "sft.batch_size")
        return self

    @property
    def device_batch(self) -> int:
        """Examples per forward/backward pass on one device."""
        return self.launch.per_device(self.batch_size, self.micro_batch_size, "sft.batch_size")[0]

    @property
    def accumulation_steps(self) -> int:
        """Passes accumulated per optimizer step on each device (device batch x processes x this = batch_size)."""
        return self.launch.per_device(self.batch_size, self.micro_batch_size, "sft.batch_size")[1]


def check_micro_batch(batch: int, micro: int | None, what: str) -> None:
    if micro is not None and (micro > batch or batch % micro):
        raise ValueError(f"micro_batch_size {micro} must divide {what} {batch}: the effective batch would change")


class GRPOConfig(Section):
    """PAG-RL (§3.3, §4.3): trajectory-level GRPO over multi-turn rollouts in BFCL environments."""

    beta: float = Field(0.001, ge=0, description="KL coefficient to the SFT policy (paper: 0.001).")
    epsilon: float = Field(0.2, gt=0, description="PPO clip range.")
    batch_size: int = Field(8, ge=1, description="Episodes (prompts) per step (paper: 8).")
    num_generations: int = Field(8, ge=2, description="Rollouts per episode, the GRPO group (paper: 8).")
    max_actions: int = Field(10, ge=1, description="H: actions per rollout (paper: 10).")
    max_turn_actions: int = Field(5, ge=1, description=(
        "Actions per user turn: past it the turn fails and the next turn starts, so a turn that never ends cannot "
        "use up H (BFCL turns need 1-4 calls and the closing answer)."))
    max_action_tokens: int = Field(512, ge=8, description="New tokens per action (summary + think + answer).")
    max_turns: int | None = Field(None, ge=1, description="Play at most this many user turns per episode (None: all).")
    episodes: int | None = Field(None, ge=1, description="Use at most this many training episodes (None: all).")
    select: Literal["first", "shortest"] = Field("first", description="Which episodes a limit keeps: first by id, or the shortest prompts.")
    max_steps: int = Field(200, ge=1, description="Training iterations (paper: up to 200).")
    temperature: float = Field(1.0, gt=0, description="Rollout sampling temperature (paper: 1).")
    max_seq_len: int = Field(16384, ge=256, description="Longest episode stream (paper: 16,384); an episode stops there.")
    learning_rate: float = Field(1e-6, gt=0, description="Paper search: 1e-9 to 1e-5.")
    lora_r: int = Field(8, ge=1, description="LoRA rank when GRPO starts from the base model (paper: 8-16).")
    lora_alpha: int = Field(32, ge=1, description="Paper search: 32-64.")
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    alpha_fmt: float = Field(0.1, ge=0, description="Eq. 14: weight of TEMPLATE.")
    alpha_schema: float = Field(0.2, ge=0, description="Eq. 14: weight of SCHEMA.")
    alpha_acc: float = Field(1.0, ge=0, description="Eq. 14: weight of SUCCESS.")
    penalty: float = Field(0.02, ge=0, description="Eq. 14: lambda, cost per action that issues calls.")
    gamma: float = Field(1.0, gt=0, le=1, description="Eq. 6: discount over the global action index.")
    term_weights: dict[str, float] = Field(default_factory=lambda: {"judge": 0.5}, description=(
        "Weights of reward terms beyond Eq. 14's four (whose weights are alpha_fmt, alpha_schema, alpha_acc, penalty): "
        "judge = the TARL turn judge's -1/0/1 per finished turn."))
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = Field("grpo", description="TRL loss; *_dr_grpo methods force dr_grpo.")
    dr_grpo_tokens: int | None = Field(None, ge=1, description=(
        "Dr. GRPO's constant normaliser (tokens per rollout). None: the mean model tokens per rollout of the first "
        "step, then fixed. TRL's default, max_completion_length (16,384), shrinks multi-turn gradients 20-30x."))
    use_vllm: Literal["off", "colocate", "server"] = Field("off", description="GPU boxes: generate rollouts with vLLM.")
    vllm_server: str | None = Field(None, description="use_vllm=server: base URL of `trl vllm-serve`.")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, lt=1, description=(
        "use_vllm=colocate: share of the GPU vLLM reserves for its weights and KV cache (the rest trains)."))
    sample_batch_size: int = Field(8, ge=1, description="Contexts per generate() call in the CPU/transformers sampler.")
    sample_prefix_cache_mb: int = Field(1024, ge=0, description=(
        "transformers sampler: memory for the KV caches of shared context prefixes (a group's prompt, computed once "
        "for its num_generations samples); kept for one step only, since the weights change after it. 0: off."))
    micro_batch_size: int | None = Field(None, ge=1, description=(
        "Rollout streams per forward/backward pass. A step still uses batch_size x num_generations streams (generated "
        "together, advantages over whole groups); they are scored in micro-batches and the gradients accumulated "
        "(None: all in one pass)."))
    gradient_checkpointing: Literal["auto", "on", "off"] = Field("auto", description="As sft.gradient_checkpointing.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description=(
        "auto: bf16 autocast on a bf16 CUDA device or a CPU with AMX tiles, else fp32 (sampling uses the same). On CUDA "
        "with bf16 the base weights also load in bf16."))
    seed: int = 0
    launch: LaunchConfig = LaunchConfig()

    @model_validator(mode="after")
    def _micro(self):
        check_micro_batch(self.batch_size * self.num_generations, self.micro_batch_size,
                          "grpo.batch_size x grpo.num_generations")
        self.launch.per_device(self.streams_per_step, self.micro_batch_size, "grpo.batch_size x grpo.num_generations")
        if self.launch.num_processes > 1 and self.use_vllm != "off":  # server mode gathers prompts over ranks;
            raise ValueError("grpo.use_vllm needs grpo.launch.num_processes=1: episodes' lockstep rounds differ per "
                             "rank, so ranks cannot share one engine call; use the transformers sampler to train on "
                             "several GPUs")
        return self

    @property
    def streams_per_step(self) -> int:
        return self.batch_size * self.num_generations

    @property
    def device_batch(self) -> int:
        """Rollout streams per forward/backward pass on one device."""
        return self.launch.per_device(self.streams_per_step, self.micro_batch_size, "grpo streams")[0]

    @property
    def accumulation_steps(self) -> int:
        """Passes accumulated per optimizer step on each device (device batch x processes x this = streams per step)."""
        return self.launch.per_device(self.streams_per_step, self.micro_batch_size, "grpo streams")[1]


class EvaluateConfig(Section):
    """§4.2: BFCL multi-turn, run as bfcl-eval runs prompting models, scored as its checker does."""

    models: list[str] = Field(["base", "trained"], description=(
        "Models under test: 'base' (models.policy), 'reasoning' (base + CoT prompt), 'trained' (this run's "
        "final model), a model_id from the models view, or a LiteLLM model string (e.g. hosted_vllm/<m>)."))
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
    next_call_max_tokens: int = Field(256, ge=8, description="New tokens per next-call answer (a note, a think and the calls).")

    _cats = field_validator("categories")(_bfcl_categories)

    @field_validator("tau2_domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if d not in DOMAINS]
        if bad:
            raise ValueError(f"unknown tau2 domains {bad}; allowed {list(DOMAINS)}")
        return v

    @model_validator(mode="after")
    def _something(self) -> EvaluateConfig:
        if not self.categories and not self.tau2_domains and not self.next_call_limit:
            raise ValueError("evaluate needs BFCL categories, tau2_domains or next_call_limit (all are empty)")
        return self


class DispatchConfig(Section):
    """Where GPU stages run and how stage tasks fan out over shards."""

    mode: Literal["local", "work_pool"] = Field("local", description=(
        "GPU stages (verify with a local/ verifier, sft, grpo, evaluate): in this process, or as runs of the "
        "stage-<name> deployments on the GPU work pool (run_deployment; dataset ids in, dataset ids out)."))
    gpu_pool: str = Field("progra-gpu", description=(
        "Work pool the GPU stages' deployments are on (deployments/prefect.yaml): named in the timeout error, "
        "and a dispatched run that ran on another pool is logged as a warning."))
    timeout_s: int = Field(6 * 3600, ge=1, description="Longest wait for one dispatched stage run; past it the pipeline fails.")
    poll_s: float = Field(2.0, gt=0, description="How often the pipeline polls a dispatched stage run.")
    task_runner: Literal["thread", "dask", "ray"] = Field("thread", description=(
        "Prefect task runner the flows map shard tasks on: a thread pool, or prefect-dask / prefect-ray when installed."))
    max_workers: int = Field(4, ge=1, description="Shard tasks in flight (thread pool size; workers of a local Dask cluster; CPUs of a local Ray cluster).")
    address: str | None = Field(None, description="dask/ray: address of an existing cluster (None: start a local one).")


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
    evaluate: EvaluateConfig = EvaluateConfig()
    dispatch: DispatchConfig = DispatchConfig()

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
        return self

    def section(self, name: str) -> dict[str, Any]:
        """A stage's own section as plain JSON data (what enters its fingerprint). A one-process
        ``launch`` is left out: a one-process model's id does not depend on the section."""
        out = json.loads(getattr(self, name).model_dump_json())
        if out.get("launch") == _ONE_PROCESS:
            del out["launch"]
        return out


_ONE_PROCESS = LaunchConfig().model_dump(mode="json")
