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
from progra_core.llm.hf import quiet_hf
from progra_core.methods import Recipe
from progra_core.prompts import policy as policy_prompts
from progra_core.prompts.policy import build_prompt
from progra_core.prompts.tools import DocStyle
from progra_core.schemas import reject
from progra_core.train import memory
from progra_core.train.checkpoints import Checkpointing, checkpoint_callback, read_marker
from progra_core.train.tracking import Tracking, tracking_setup
from progra_core.train.trainer import (
    device_kwargs,
    lora_config,
    preflight,
    quiet_trainer,
    save_adapter,
    score_labelled_positions_only,
    step_callbacks,
    weights_dtype,
    world,
)

__all__ = ["STAGE", "CODE_VERSION", "sft_rows", "fit_length", "train_sft"]

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
