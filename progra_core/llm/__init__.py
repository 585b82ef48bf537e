"""LLM access for every role: LiteLLM model strings and in-process ``local/`` models."""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from progra_core.llm.gateway import ChatRequest, ChatResult, EndpointUnavailable, Gateway, is_transient  # noqa: E402

__all__ = ["ChatRequest", "ChatResult", "EndpointUnavailable", "Gateway", "is_transient"]
