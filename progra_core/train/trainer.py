"""What the SFT and PAG-RL trainers share: the LoRA adapter, precision and checkpointing per
device, the memory preflight, step callbacks, the quiet trainer, the adapter save under every
distributed type, and the CPU LM-head switch. One module, so neither trainer imports the other.

torch, PEFT, transformers and TRL are imported inside the functions: heavy, and only some callers need them."""

from __future__ import annotations

from collections.abc import Callable

from progra_core.llm.hf import cpu_bf16
from progra_core.train import memory

__all__ = ["lora_config", "use_bf16", "weights_dtype", "use_checkpointing", "device_memory", "preflight", "device_kwargs",
           "step_callbacks", "score_labelled_positions_only", "quiet_trainer", "save_adapter", "world"]


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
