"""How progra runs Hugging Face libraries: their progress bars off (every stage reports its own
progress), and the deprecation warnings that come from inside TRL and PEFT, where the project
cannot act on them, filtered by their exact text. Anything else still warns.

datasets, transformers are imported inside the functions that use them: heavy, and only some callers need them."""

from __future__ import annotations

import inspect
import warnings

__all__ = ["quiet_hf", "cache_kwarg"]

#: (message regex, module regex) of warnings raised inside libraries about their own internals.
_FOREIGN_WARNINGS = (
    # TRL's configs still declare `gradient_checkpointing`; transformers 5 renamed the field
    (r"`gradient_checkpointing` is deprecated", r"transformers\.training_args"),
    # PEFT and TRL ask models `is_gradient_checkpointing`; transformers 5 renamed it
    (r"`is_gradient_checkpointing` is deprecated", r"transformers\.modeling_utils"),
)
_DONE = False


def quiet_hf() -> None:
    """Idempotent: turn off transformers' and datasets' progress bars and filter the named
    foreign deprecation warnings (``warnings.filterwarnings`` with message and module)."""
    global _DONE
    if _DONE:
        return
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.disable_progress_bar()
    for message, module in _FOREIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning, module=module)
    _DONE = True


def cache_kwarg(model) -> str:
    """The forward argument that takes a KV cache: ``cache`` in transformers 5, ``past_key_values`` before."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
