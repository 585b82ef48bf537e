"""The request and result every LLM role exchanges with the gateway (remote or ``local/``).

Kept apart from the gateway so the backends (``local``) and the failure rules (``errors``) can
name them without importing the gateway that imports them."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

__all__ = ["ChatRequest", "ChatResult", "Endpoint", "LOCAL_PREFIX", "ENTRY_FIELDS", "entry_problem", "load_litellm"]


def load_litellm():
    """LiteLLM, imported where it is first needed (heavy, and only some callers need it), with its
    bundled price map: without ``LITELLM_LOCAL_MODEL_COST_MAP`` its import fetches one from the
    network. Set here, at first use, not when a progra module is imported."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm

LOCAL_PREFIX = "local/"


@dataclass
class ChatRequest:
    """One chat completion. ``sample`` separates otherwise identical requests in the cache (e.g.
    the K candidates of a majority vote); ``id`` is the caller's item id, for accounting only."""

    messages: list[dict]
    model: str
    role: str = "default"
    temperature: float = 0.0
    max_tokens: int = 256
    stop: list[str] | None = None
    seed: int | None = None
    sample: int = 0
    api_base: str | None = None
    api_key_env: str | None = None
    id: str | None = None
    extra: dict = field(default_factory=dict)
    #: Assistant-turn prefill (e.g. "<summary>") for ``local/`` models: generation continues from
    #: it and the returned text starts with it. Remote endpoints ignore it.
    prefix: str | None = None

    def cache_key(self, identity: dict | None = None) -> str:
        """sha256 of everything that decides the answer. ``identity`` is what a ``local/`` name
        stands for (the gateway's :meth:`~progra_core.llm.gateway.Gateway.identity`: content digests
        of the weights and adapter, dtype, library versions); it replaces the name, which is only
        an alias (``local/policy`` may be any model). Remote models are their string + ``api_base``."""
        payload = {
            "model": self.model if identity is None else {"local": identity},
            "messages": self.messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": self.stop,
            "seed": self.seed,
            "sample": self.sample,
            "api_base": self.api_base,
            "extra": self.extra,
            "prefix": self.prefix if self.model.startswith(LOCAL_PREFIX) else None,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


#: the fields a cache entry holds, and the types each may have
ENTRY_FIELDS: dict[str, tuple[type, ...]] = {
    "text": (str,), "model": (str,), "error": (type(None),), "finish_reason": (str, type(None)),
    "prompt_tokens": (int,), "completion_tokens": (int,), "latency_ms": (int, float), "retryable": (bool,),
}


def entry_problem(entry: object) -> str | None:
    """Why a cache entry is not an answer this gateway stored (None when it is one)."""
    if not isinstance(entry, dict):
        return f"a JSON {type(entry).__name__}, not an object"
    if "text" not in entry:
        return "no text"
    for k, v in entry.items():
        if k not in ENTRY_FIELDS:
            return f"unknown field {k!r}"
        if not isinstance(v, ENTRY_FIELDS[k]) or (isinstance(v, bool) and bool not in ENTRY_FIELDS[k]):
            return f"{k} is a {type(v).__name__}"
    return None


@dataclass
class ChatResult:
    text: str | None
    model: str
    role: str = "default"
    id: str | None = None
    error: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    attempts: int = 0  # HTTP/generation attempts made for this result (0 = served from cache)
    cached: bool = False
    #: The failure is the endpoint's, not the request's: asking again later may succeed.
    retryable: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


@dataclass(frozen=True)
class Endpoint:
    """How one role reaches its model: the model string, an ``api_base`` and the name of the
    environment variable holding its key (never the key itself)."""

    model: str
    api_base: str | None = None
    api_key_env: str | None = None
