"""What every config section shares: strict validation, and the small checks and constants more
than one section uses."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

__all__ = ["Section", "BFCL_CATEGORIES", "ANSWER_TOKENS", "check_micro_batch", "words"]

BFCL_CATEGORIES = ("base", "miss_func", "miss_param", "long_context")
#: Tokens an action needs besides its awareness note: the think and the call list.
ANSWER_TOKENS = 64


def known_bfcl_categories(cls, v: list[str]) -> list[str]:
    """BFCL multi-turn categories, checked the same way wherever a section names some (a field validator)."""
    bad = [c for c in v if c not in BFCL_CATEGORIES]
    if bad:
        raise ValueError(f"unknown BFCL categories {bad}; allowed {list(BFCL_CATEGORIES)}")
    return v


def _word(v):
    """YAML 1.1 reads an unquoted ``on``/``off`` as true/false (``--set grpo.use_vllm=off``, a
    profile without quotes): give a word field its word back."""
    return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v


def words(literal):
    """A ``Literal`` of words that also takes YAML's unquoted ``on``/``off``."""
    return Annotated[literal, BeforeValidator(_word)]


class Section(BaseModel):
    """strict: no coercion (``true`` is not 50 %, ``no`` is not a model name, ``"1"`` is not 1;
    an int is still a float); no NaN or infinity in any number."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


def check_micro_batch(batch: int, micro: int | None, what: str) -> None:
    """Refuse a micro batch that does not divide the batch: accumulation would change the effective batch."""
    if micro is not None and (micro > batch or batch % micro):
        raise ValueError(f"micro_batch_size {micro} must divide {what} {batch}: the effective batch would change")

