"""A trained adapter as a plain model folder: the LoRA merged into its base, saved as safetensors
with the base's tokenizer, so ``transformers``, vLLM or any HF tool loads it without PEFT.

The merge runs in fp32 (whatever the base's stored dtype) and is saved in the base's dtype: one
rounding, at the end, as PEFT's own ``merge_and_unload`` on a full-precision copy would do."""

from __future__ import annotations

from pathlib import Path

__all__ = ["merge_adapter"]


def merge_adapter(base: str, adapter: str, out: str | Path) -> Path:
    """Write ``base`` + ``adapter`` merged to ``out`` (a new folder) and return it."""
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: give a new folder")
    dtype = getattr(AutoConfig.from_pretrained(base), "torch_dtype", None) or torch.float32
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.to(dtype).save_pretrained(out, safe_serialization=True)
    tok_src = adapter if (Path(adapter) / "tokenizer_config.json").exists() else base
    AutoTokenizer.from_pretrained(tok_src).save_pretrained(out)
    return out
