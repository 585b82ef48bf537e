"""Calibrate ``progra plan`` on this CPU: the peak memory a TRL SFT step really adds, against the estimate.

Each point runs in its own process (peak RSS is per process and never goes down): it loads the
model, builds TRL's ``SFTTrainer`` as ``train.sft`` does (LoRA all-linear, completion-only loss,
the fused LM head TRL 1.16 installs, bf16 autocast where the CPU has AMX), takes the resident set
at ``on_train_begin`` and the peak after two steps. measured = peak − that baseline: what the
steps added (LoRA optimizer state, saved activations, the LM-head tiles, masks, backward
buffers), which is the estimate without its weights and overhead terms.

    python scripts/memory_calibration.py MODEL_DIR [--points 1x256,1x1024,2x1024] [--padded]

Prints one JSON line per point and a summary line (the largest relative error)."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def one(model_dir: str, micro: int, length: int, padded: bool, completion: int) -> dict:
    """Two SFT steps of ``micro`` rows of ``length`` tokens (with ``padded``, the second row of each
    batch is half as long, so the batch is padded and the attention needs a mask)."""
    import tempfile

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from progra_core.config import SFTConfig
    from progra_core.train import memory
    from progra_core.train.trainer import (
        device_kwargs,
        lora_config,
        quiet_trainer,
        score_labelled_positions_only,
        use_bf16,
        weights_dtype,
    )

    score_labelled_positions_only()  # as train.sft does
    tok = AutoTokenizer.from_pretrained(model_dir)

    def row(n: int) -> dict:  # a prompt of filler words and a completion, n tokens in all with the template
        prompt = [{"role": "user", "content": "word " * max(n - completion - 16, 1)}]
        completion_msg = [{"role": "assistant", "content": "x " * (completion - 4)}]
        return {"prompt": prompt, "completion": completion_msg}

    rows = [row(length if (k % 2 == 0 or not padded) else length // 2) for k in range(micro * 2)]
    cfg = SFTConfig(batch_size=micro, max_length=length, max_steps=2, lora_r=16, lora_alpha=32, lora_dropout=0.0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=weights_dtype(cfg.precision))
    marks: dict[str, int] = {}

    class Mark(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            marks["begin"] = _rss()

    with tempfile.TemporaryDirectory() as tmp:
        args = TRLSFTConfig(output_dir=tmp, max_steps=2, per_device_train_batch_size=micro, learning_rate=1e-4,
                            max_length=length, completion_only_loss=True, eval_strategy="no",
                            **device_kwargs(cfg.precision, cfg.gradient_checkpointing))
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                             peft_config=lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout), callbacks=[Mark()])
        quiet_trainer(trainer)
        lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
        trainer.train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    arch = memory.load_arch(model_dir)
    bf16 = use_bf16(cfg.precision)
    est = memory.estimate_sft(arch, cfg.model_copy(update={"max_length": max(lengths)}), bf16=bf16, checkpointing=False,
                              weight_bytes=4, padded=padded, completion_tokens=completion)
    added = {k: v for k, v in est.parts.items() if k not in ("weights", "overhead")}
    return {"model": Path(model_dir).name, "micro": micro, "length": max(lengths), "padded": padded, "bf16": bf16,
            "measured_mib": round((peak - marks["begin"]) / 2**20, 1),
            "estimate_mib": round(sum(added.values()) / 2**20, 1),
            "with_overhead_mib": round((est.total - est.parts["weights"]) / 2**20, 1),
            "parts_mib": {k: round(v / 2**20, 1) for k, v in added.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--points", default="1x256,1x512,1x1024,1x2048,2x1024,2x2048")
    ap.add_argument("--padded", action="store_true", help="also each point with a padded batch (micro > 1)")
    ap.add_argument("--completion", type=int, default=64, help="completion tokens per row (the loss's positions)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        micro, length, padded = a.one.split(":")
        print(json.dumps(one(a.model_dir, int(micro), int(length), padded == "1", a.completion)))
        return
    worst, lowest = 0.0, float("inf")
    for p in a.points.split(","):
        micro, length = (int(x) for x in p.split("x"))
        for padded in ([False, True] if a.padded and micro > 1 else [False]):
            out = subprocess.run([sys.executable, __file__, a.model_dir, "--completion", str(a.completion),
                                  "--one", f"{micro}:{length}:{int(padded)}"], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r["error"] = round(r["estimate_mib"] / r["measured_mib"] - 1, 3)
            r["error_with_overhead"] = round(r["with_overhead_mib"] / r["measured_mib"] - 1, 3)
            worst = max(worst, abs(r["error"]))
            lowest = min(lowest, r["error_with_overhead"])
            print(json.dumps(r), flush=True)
    print(json.dumps({"worst_relative_error": worst, "lowest_error_with_overhead": lowest}))


if __name__ == "__main__":
    main()
