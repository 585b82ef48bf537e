"""Stage ``sft`` (§3.2 "Model Warm-Up"): LoRA SFT of the target policy on D_sft → π_θ'.

Rows are prompt/completion conversations, so TRL computes the loss on the completion (the
assistant's ``<summary>…<answer>`` target) only; SmolLM2's stock template has no
``{% generation %}`` markers for ``assistant_only_loss``. An example longer than ``max_length``
loses its oldest history messages first (TRL would otherwise cut the end, i.e. the target); one
that still does not fit is a ``too_long`` reject. Evaluation loss on the validation split is
measured before and after training: the paper's check that warm-up moved the model.

datasets, PEFT, torch, transformers, TRL are imported inside the functions that use them: heavy, and only some callers need them."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from progra_core import versioning
from progra_core.config import SFTConfig, SFTDataConfig
from progra_core.data.sft_data import split_for, turn_end_examples
from progra_core.llm.hf import cpu_bf16, quiet_hf
from progra_core.methods import Recipe
from progra_core.prompts import policy as policy_prompts
from progra_core.prompts.policy import build_prompt
from progra_core.prompts.tools import DocStyle
from progra_core.schemas import reject
from progra_core.train import memory
from progra_core.train.checkpoints import Checkpointing, checkpoint_callback, read_marker
from progra_core.train.tracking import Tracking, tracking_setup

__all__ = ["STAGE", "CODE_VERSION", "sft_rows", "fit_length", "train_sft", "lora_config", "device_kwargs", "step_callbacks",
           "quiet_trainer", "score_labelled_positions_only", "save_adapter", "world", "weights_dtype", "use_checkpointing", "preflight", "device_memory"]

STAGE = "sft"
CODE_VERSION = versioning.code_version("1", __name__)


def sft_rows(r: Recipe, examples: Sequence[dict], segments: Sequence[dict], validation_percent: int = 10,
             seed: int = 0, docs_style: DocStyle = "json", turn_ends: bool = True) -> list[dict]:
    """Training rows for a recipe: ``pag`` = the sft_examples (awareness, cold start, turn ends);
    ``plain`` (the SFT baseline) = every train segment with its raw prefix and a calls-only target,
    and each turn's closing answer."""
    if r.sft == "pag":
        return [{"id": e["example_id"], "kind": e["kind"], "prompt": e["prompt"], "completion": e["completion"],
                 "split": e["split"]} for e in examples]
    if r.sft == "plain":
        rows = []
        for seg in segments:
            if seg.get("split") == "held_out":
                continue
            target = policy_prompts.format_policy_target("[" + ", ".join(c["text"] for c in seg["target_calls"]) + "]")
            rows.append({"id": f"plain:{seg['segment_id']}", "kind": "plain",
                         "prompt": build_prompt(seg, awareness=False, docs_style=docs_style),
                         "completion": [{"role": "assistant", "content": target}],
                         "split": split_for(seg["trajectory_id"], validation_percent, seed)})
        if turn_ends:
            cfg = SFTDataConfig(validation_percent=validation_percent, seed=seed)
            rows += [{"id": e["example_id"], "kind": "turn_end", "prompt": e["prompt"], "completion": e["completion"],
                      "split": e["split"]} for e in turn_end_examples(segments, None, False, docs_style, cfg)]
        return rows
    return []


def fit_length(rows: Sequence[dict], tokenizer, max_length: int) -> tuple[list[dict], list[dict], dict]:
    """Drop the oldest history messages of too-long examples (never the system prompt, the current
    query or the target); examples that still do not fit become ``too_long`` rejects."""

    def length(prompt, completion) -> int:
        text = tokenizer.apply_chat_template(list(prompt) + list(completion), tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    kept, rejects, trimmed = [], [], 0
    for row in rows:
        prompt = list(row["prompt"])
        last_user = max(i for i, m in enumerate(prompt) if m["role"] == "user")
        n = length(prompt, row["completion"])
        cut = 0
        while n > max_length and 1 + cut < last_user:
            cut += 1
            while 1 + cut < last_user and prompt[1 + cut]["role"] != "user":  # start history at a user turn
                cut += 1
            n = length(prompt[:1] + prompt[1 + cut:], row["completion"])
        if n > max_length:
            rejects.append(reject(STAGE, row["id"], "too_long", f"{n} tokens without history > max_length {max_length}"))
            continue
        trimmed += cut > 0
        kept.append({**row, "prompt": prompt[:1] + prompt[1 + cut:], "tokens": n})
    return kept, rejects, {"trimmed": trimmed, "too_long": len(rejects)}


def lora_config(r: int, alpha: int, dropout: float = 0.05):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM")


def use_bf16(precision: str = "auto") -> bool:
    """bf16 autocast: on a CUDA device that supports it, and on CPUs with AMX tiles (measured here:
    a LoRA step of SmolLM2 at 2 x 1024 tokens takes 7-8 s under bf16 autocast against 13-16 s in
    fp32, same loss to 4 digits); ``fp32`` / ``bf16`` force it."""
    import torch

    if precision != "auto":
        return precision == "bf16"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_bf16()


def weights_dtype(precision: str = "auto"):
    """The dtype the base weights load in: bf16 on a CUDA device when bf16 is used (half the
    memory of fp32; LoRA weights and optimizer state stay fp32, PEFT's default), fp32 elsewhere
    (CPU autocast computes in bf16 but keeps fp32 weights)."""
    import torch

    return torch.bfloat16 if torch.cuda.is_available() and use_bf16(precision) else torch.float32


def use_checkpointing(mode: str = "auto") -> bool:
    import torch

    return torch.cuda.is_available() if mode == "auto" else mode == "on"


def device_memory() -> int | None:
    """Bytes of the training device (CUDA device 0), or None on CPU (no estimate is enforced there)."""
    import torch

    return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None


def preflight(estimate, base_path: str, cfg, hint: str, gpu_bytes: int | None = None, **kw) -> memory.Estimate | None:
    """Estimate a stage's peak memory on the device and refuse (``memory.DoesNotFit``) before
    anything loads when it cannot fit. ``gpu_bytes`` defaults to the CUDA device's; on CPU, None."""
    gpu_bytes = gpu_bytes if gpu_bytes is not None else device_memory()
    if gpu_bytes is None:
        return None
    args = (memory.load_arch(base_path), cfg) + ((gpu_bytes,) if estimate is memory.estimate_grpo else ())
    est = estimate(*args, bf16=use_bf16(cfg.precision), checkpointing=use_checkpointing(cfg.gradient_checkpointing), **kw)
    memory.check_fits(est, gpu_bytes, hint)
    return est


def device_kwargs(precision: str = "auto", gradient_checkpointing: str = "auto", accumulation_steps: int = 1) -> dict:
    """TRL configs default to bf16 and gradient checkpointing even on CPU: set both explicitly
    (bf16 as :func:`use_bf16` decides, checkpointing as :func:`use_checkpointing`). The trainer's
    own progress bar and printed log dicts are off: the stage reports steps through its callbacks
    (:func:`step_callbacks`) and TRL's logs land in ``train_log``."""
    import torch

    cuda = torch.cuda.is_available()
    ckpt = use_checkpointing(gradient_checkpointing)
    return {"bf16": use_bf16(precision), "fp16": False, "gradient_checkpointing": ckpt,
            **({"gradient_checkpointing_kwargs": {"use_reentrant": False}} if ckpt else {}),
            "gradient_accumulation_steps": accumulation_steps,
            "use_cpu": not cuda, "report_to": [], "save_strategy": "no", "logging_steps": 1, "dataloader_num_workers": 0,
            "disable_tqdm": True}


def step_callbacks(progress: Callable[[int, int], None] | None, log: Callable[[dict], None] | None = None) -> list:
    """A TrainerCallback reporting (step, max_steps) after every optimizer step and handing each
    of TRL's log dicts to ``log`` (the stage's logger) instead of printing it."""
    from transformers import TrainerCallback

    class _Steps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if progress is not None:
                progress(state.global_step, state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if log is not None and logs:
                log({"step": state.global_step, **logs})

    return [_Steps()]


def score_labelled_positions_only() -> bool:
    """TRL's fused LM head scores only the positions that carry a label on Triton devices and every
    position elsewhere (fixed tile shapes, for devices that compile them). A CPU compiles nothing, so
    there the vocabulary tiles over every prompt position are pure cost: an embedded SFT step
    (2 rows of ~1,300 tokens, ~150 of them the target) spent most of its LM-head time on positions
    whose loss is then zeroed. Point TRL's choice at the labelled positions on CPU as well; the
    kernel is unchanged (its torch tiles), so the loss and gradients are the same. Returns whether
    the switch is in place (False when this TRL no longer has it)."""
    from trl.kernels import chunked_logprob
    from trl.trainer import utils as trl_utils

    triton = getattr(chunked_logprob, "_use_triton", None)
    if triton is None or not hasattr(trl_utils, "_use_triton"):
        return False
    if not getattr(trl_utils._use_triton, "progra_compact", False):
        def compact(device, _triton=triton):
            return _triton(device) or device.type == "cpu"
        compact.progra_compact = True
        trl_utils._use_triton = compact
    return True


def quiet_trainer(trainer):
    """Drop the callbacks that print to the terminal (per-step log dicts, the tqdm bar)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer


def save_adapter(trainer, tok, out_dir, **kw) -> None:
    """Save the trained adapter and tokenizer once: rank 0 under DDP (every rank holds the same
    weights); under FSDP/DeepSpeed the Trainer's collective save gathers the shards first. Under
    FSDP the adapter is saved as a full state dict whatever the plugin trains with: with
    ``SHARDED_STATE_DICT`` (configs/accelerate/fsdp.yaml) ``Trainer.save_model`` writes nothing."""
    acc = trainer.accelerator
    if acc.distributed_type.name == "FSDP":
        plugin = acc.state.fsdp_plugin
        kept = plugin.state_dict_type
        plugin.set_state_dict_type("FULL_STATE_DICT")
        try:
            trainer.save_model(str(out_dir))
        finally:
            plugin.set_state_dict_type(kept)
    elif acc.distributed_type.name == "DEEPSPEED":
        trainer.save_model(str(out_dir))
    elif acc.is_main_process:
        trainer.model.save_pretrained(str(out_dir), **kw)
    if acc.is_main_process:
        tok.save_pretrained(str(out_dir))
    acc.wait_for_everyone()


def world(trainer) -> dict:
    """How the batch was spread: processes, device batch, accumulation and their product (the
    effective batch, which the config fixes)."""
    a = trainer.args
    n = trainer.accelerator.num_processes
    return {"processes": n, "device_batch": a.per_device_train_batch_size, "accumulation": a.gradient_accumulation_steps,
            "effective_batch": a.per_device_train_batch_size * n * a.gradient_accumulation_steps}


def train_sft(rows: Sequence[dict], base_path: str, cfg: SFTConfig, out_dir: str | Path, seed: int = 0,
              progress: Callable[[int, int], None] | None = None, log: Callable[[dict], None] | None = None,
              checkpoints: Checkpointing | None = None, tracking: Tracking | None = None) -> dict:
    """LoRA SFT with TRL on the train split, eval loss on the validation split before and after.
    Saves the adapter (``PeftModel.from_pretrained``-loadable) and tokenizer to ``out_dir``. With
    ``checkpoints``, saves every ``save_steps`` and first resumes from the newest complete checkpoint;
    ``tracking`` sends the trainer's logs to the configured trackers."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    preflight(memory.estimate_sft, base_path, cfg, "lower sft.micro_batch_size (the effective batch stays sft.batch_size) "
              "or sft.max_length")
    quiet_hf()
    score_labelled_positions_only()
    tok = AutoTokenizer.from_pretrained(base_path)
    train = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows if r["split"] == "train"]
    val = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows if r["split"] == "validation"]
    if not train:
        raise ValueError("no SFT training rows: the train split is empty")
    micro = cfg.device_batch  # per device; x processes x accumulation = batch_size
    resume = checkpoints.resume_from() if checkpoints else None
    start = read_marker(resume)["step"] if resume else 0  # read now: the trainer rotates old checkpoints away
    trackers, report_to = tracking_setup(tracking, start)
    with tempfile.TemporaryDirectory(prefix="progra-sft-") as tmp:
        args = TRLSFTConfig(**{
            "output_dir": tmp, "max_steps": cfg.max_steps, "per_device_train_batch_size": micro,
            "per_device_eval_batch_size": micro, "learning_rate": cfg.learning_rate, "warmup_steps": cfg.warmup_steps,
            "lr_scheduler_type": cfg.lr_scheduler, "max_length": cfg.max_length, "completion_only_loss": True, "seed": seed,
            "eval_strategy": "no", **device_kwargs(cfg.precision, cfg.gradient_checkpointing, cfg.accumulation_steps),
            **(checkpoints.trainer_kwargs() if checkpoints else {}), "report_to": report_to})
        # after the training config: under DeepSpeed ZeRO-3 it is what makes from_pretrained partition
        # the weights as they load, instead of every rank building the whole model in host memory
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=weights_dtype(cfg.precision))
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train),
                             eval_dataset=Dataset.from_list(val) if val else None, processing_class=tok,
                             peft_config=lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout),
                             callbacks=step_callbacks(progress, log) + trackers
                             + ([checkpoint_callback(checkpoints)] if checkpoints else []))
        quiet_trainer(trainer)
        before = trainer.evaluate()["eval_loss"] if val else None
        t0 = time.perf_counter()
        out = trainer.train(resume_from_checkpoint=resume)
        seconds = time.perf_counter() - t0
        after = trainer.evaluate()["eval_loss"] if val else None
        save_adapter(trainer, tok, out_dir)
        history = list(trainer.state.log_history)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {
        "train_loss": out.training_loss, "eval_loss_before": before, "eval_loss_after": after,
        "steps": trainer.state.global_step, "seconds": round(seconds, 2),
        "resumed_from_step": start or None,
        "seconds_per_step": round(seconds / max(trainer.state.global_step - start, 1), 3),
        "train_examples": len(train), "validation_examples": len(val), "trainable_params": trainable,
        "kinds": dict(Counter(r["kind"] for r in rows)), "device": "cuda" if torch.cuda.is_available() else "cpu",
        **world(trainer), "log_history": history,
    }
