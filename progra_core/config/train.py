"""The training stages' sections: warm-up SFT, PAG-RL (GRPO), and how either spreads over more
than one device."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from progra_core.config.base import Section, check_micro_batch, words

__all__ = ["LaunchConfig", "SFTConfig", "GRPOConfig", "TrackingConfig"]


class TrackingConfig(Section):
    """Where the training stages report their logs (loss, rewards, KL, learning rate per step),
    besides the ``train_log`` dataset. Not part of any model id."""

    report_to: list[str] = Field(["tensorboard"], description=(
        "Trackers, by transformers' names. tensorboard (default, offline): event files in "
        "{root}/tracking/{stage}/{model id}, with the run's config, dataset ids and model id as text; view with "
        "`tensorboard --logdir {root}/tracking`. Others (mlflow, wandb, trackio, ...) go to the trainer's report_to "
        "as they are and read their own environment (e.g. MLFLOW_TRACKING_URI); install them yourself. []: none."))


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
    lora_dropout: float = Field(0.05, ge=0, lt=1, description=(
        "Dropout on each LoRA layer's input (PEFT's lora_dropout); 0 skips it, which on CPU saves ~1/4 of a step."))
    learning_rate: float = Field(1e-6, gt=0, description="Paper search: 1e-7 to 1e-6 on 3-8B models.")
    batch_size: int = Field(8, ge=1, description="Examples per optimizer step (paper search: 8-16).")
    micro_batch_size: int | None = Field(None, ge=1, description=(
        "Examples per forward/backward pass; batch_size / micro_batch_size passes are accumulated into one step, so the "
        "effective batch stays batch_size (None: batch_size, no accumulation)."))
    gradient_checkpointing: words(Literal["auto", "on", "off"]) = Field("auto", description=(
        "Recompute activations in the backward pass instead of keeping them: auto = on CUDA (activations dominate "
        "long-context memory there), off on CPU (a 135M model's activations are small; checkpointing costs ~30 % time)."))
    max_steps: int = Field(200, ge=1, description="Optimizer steps.")
    warmup_steps: int = Field(0, ge=0)
    lr_scheduler: Literal["linear", "cosine", "constant"] = "linear"
    max_length: int = Field(16384, ge=64, description="Tokens per example; longer ones lose their oldest history first.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description=(
        "auto: bf16 autocast on a bf16 CUDA device or a CPU with AMX tiles (about 2x faster here), else fp32. On CUDA "
        "with bf16 the base weights also load in bf16 (half the memory); on CPU they stay fp32."))
    save_steps: int = Field(50, ge=0, description=(
        "Save a checkpoint (adapter, optimizer, scheduler, RNG, step) every this many steps under "
        "{root}/checkpoints/sft/{model id}; a rerun or retry of the same stage resumes from the newest complete one. "
        "0: never (a crash restarts at step 0). Not part of the model id."))
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept (older ones are deleted); all go once the model is registered.")
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
    lora_r: int | None = Field(None, ge=1, description=(
        "LoRA rank. PAG-RL continues training the SFT adapter, whose shape is fixed: None takes the adapter's, a "
        "different value is refused before anything loads. From the base model (no SFT adapter) None means 8."))
    lora_alpha: int | None = Field(None, ge=1, description=(
        "LoRA alpha (paper search: 32-64), inherited and checked like lora_r; from the base model None means 32."))
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on each LoRA layer's input (PEFT's lora_dropout).")
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
    use_vllm: words(Literal["off", "colocate", "server"]) = Field("off", description="GPU boxes: generate rollouts with vLLM.")
    vllm_server: str | None = Field(None, description="use_vllm=server: base URL of `trl vllm-serve`.")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, lt=1, description=(
        "use_vllm=colocate: share of the GPU vLLM reserves for its weights and KV cache (the rest trains)."))
    importance_sampling: Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"] = Field(
        "token_truncate", description=(
            "use_vllm: how TRL corrects for vLLM's sampling log-probs differing from the trainer's (its "
            "vllm_importance_sampling_mode). TRL's default, sequence_mask, multiplies the ratios of every model token "
            "of a stream and drops the whole rollout past the cap: on multi-thousand-token multi-turn streams a tiny "
            "per-token mismatch adds up and masks most rollouts. token_truncate clips each token's ratio instead."))
    importance_sampling_cap: float = Field(3.0, gt=1, description="use_vllm: the ratio cap (TRL's vllm_importance_sampling_clip_max).")
    sample_batch_size: int = Field(8, ge=1, description="Contexts per generate() call in the CPU/transformers sampler.")
    sample_prefix_cache_mb: int = Field(1024, ge=0, description=(
        "transformers sampler: memory for the KV caches of shared context prefixes (a group's prompt, computed once "
        "for its num_generations samples); kept for one step only, since the weights change after it. 0: off."))
    micro_batch_size: int | None = Field(None, ge=1, description=(
        "Rollout streams per forward/backward pass. A step still uses batch_size x num_generations streams (generated "
        "together, advantages over whole groups); they are scored in micro-batches and the gradients accumulated "
        "(None: all in one pass)."))
    gradient_checkpointing: words(Literal["auto", "on", "off"]) = Field("auto", description="As sft.gradient_checkpointing.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description=(
        "auto: bf16 autocast on a bf16 CUDA device or a CPU with AMX tiles, else fp32 (sampling uses the same). On CUDA "
        "with bf16 the base weights also load in bf16."))
    seed: int = 0
    save_steps: int = Field(10, ge=0, description=(
        "As sft.save_steps (under {root}/checkpoints/grpo/{model id}); a checkpoint also holds the rollouts recorded so "
        "far and Dr. GRPO's normaliser, and the KL reference is the SFT adapter again on resume."))
    save_total_limit: int = Field(2, ge=1, description="As sft.save_total_limit.")
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
        if self.launch.num_processes > 1 and self.launch.strategy in ("fsdp", "deepspeed"):
            raise ValueError(f"grpo.launch.strategy={self.launch.strategy} with {self.launch.num_processes} processes: "
                             "the transformers sampler's forwards are collectives when the weights are sharded "
                             "(FSDP2 all-gathers, ZeRO-3 gathers), and ranks play their episodes for different numbers "
                             "of rounds, so one rank would wait forever; use launch.strategy=ddp for PAG-RL (the "
                             "policy is a LoRA over a frozen base), or one process")
        return self

    @property
    def streams_per_step(self) -> int:
        return self.batch_size * self.num_generations

    def lora_shape(self, start: tuple[int, int] | None = None) -> tuple[int, int]:
        """(rank, alpha) of the adapter PAG-RL trains. ``start``: the (rank, alpha) of the SFT adapter it
        continues, or None from the base model. A set value that differs from the adapter's is refused:
        applying it would rescale (alpha / rank) a trained adapter at step 0, i.e. start from another policy."""
        if start is None:
            return self.lora_r or 8, self.lora_alpha or 32
        wrong = [f"grpo.{k}={mine} but the SFT adapter it continues has {k}={theirs}"
                 for k, mine, theirs in (("lora_r", self.lora_r, start[0]), ("lora_alpha", self.lora_alpha, start[1]))
                 if mine is not None and mine != theirs]
        if wrong:
            raise ValueError("; ".join(wrong) + ": PAG-RL keeps training that adapter, whose shape is fixed. Leave "
                             "grpo.lora_r / grpo.lora_alpha unset (null) to inherit it, or change sft.lora_r / sft.lora_alpha")
        return start

    @property
    def device_batch(self) -> int:
        """Rollout streams per forward/backward pass on one device."""
        return self.launch.per_device(self.streams_per_step, self.micro_batch_size, "grpo streams")[0]

    @property
    def accumulation_steps(self) -> int:
        """Passes accumulated per optimizer step on each device (device batch x processes x this = streams per step)."""
        return self.launch.per_device(self.streams_per_step, self.micro_batch_size, "grpo streams")[1]

