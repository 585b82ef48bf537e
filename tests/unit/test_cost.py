"""Cost in money of paid LLM work: LiteLLM's own price map, read offline; in-process models cost
nothing; a model without a price is reported as unpriced, never as free."""

from __future__ import annotations

import litellm
import pytest

from progra_core.llm.gateway import call_cost, summarize_usage
from progra_core.llm.transport import price_unknown
from tasks.artifacts import cost_text


def _rec(model, role="generator", cached=False, pt=1000, ct=500):
    return {"role": role, "model": model, "prompt_tokens": pt, "completion_tokens": ct, "latency_ms": 10.0, "attempts": 1,
            "cached": cached, "error": None}


def test_a_priced_model_costs_what_litellms_map_says_and_cache_hits_cost_nothing(monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    p, c = litellm.cost_per_token(model="gpt-4o", prompt_tokens=1000, completion_tokens=500)
    assert p + c > 0
    u = summarize_usage([_rec("gpt-4o"), _rec("gpt-4o"), _rec("gpt-4o", cached=True)])["generator"]
    assert u["cost_usd"] == pytest.approx(2 * (p + c)) and u["unpriced_calls"] == 0
    assert cost_text(u) == f"{2 * (p + c):.4f}"


def test_unknown_models_are_unpriced_not_free_and_local_models_cost_nothing():
    assert call_cost("local/smollm2", 1000, 500) == 0.0
    assert call_cost("openai/echo-of-a-private-server", 1000, 500) is None
    price_unknown("openai/echo-of-a-private-server")  # what the gateway does on the first call: zero in LiteLLM's map
    assert call_cost("openai/echo-of-a-private-server", 1000, 500) is None  # still unknown to progra
    u = summarize_usage([_rec("openai/echo-of-a-private-server"), _rec("local/smollm2")])["generator"]
    assert u["cost_usd"] == 0.0 and u["unpriced_calls"] == 1
    assert cost_text(u) == "unknown (1 calls unpriced)"
    mixed = summarize_usage([_rec("gpt-4o"), _rec("openai/echo-of-a-private-server")])["generator"]
    assert mixed["cost_usd"] > 0 and cost_text(mixed).endswith("+ unknown (1 calls unpriced)")
