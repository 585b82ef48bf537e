"""LiteLLM round trips through the gateway against real OpenAI-compatible servers on loopback."""

import pytest

from progra_core.llm import ChatRequest, Gateway

pytestmark = pytest.mark.server


@pytest.mark.slow
def test_round_trip_real_generation(katan_transformers, tmp_path):
    g = Gateway(tmp_path / "cache", concurrency=2, timeout_s=120)
    reqs = [ChatRequest([{"role": "user", "content": q}], f"openai/{katan_transformers.name}", role="generator",
                        api_base=katan_transformers.api_base, max_tokens=16, id=str(i))
            for i, q in enumerate(["What is the capital of France?", "Name a color."])]
    res = g.batch(reqs)
    assert all(r.ok for r in res), [r.error for r in res]
    assert all(r.text.strip() for r in res)
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 and r.latency_ms > 0 for r in res)
    assert g.requests_sent == 2
    # a rerun asks nothing: served from the persistent cache
    g2 = Gateway(tmp_path / "cache")
    again = g2.batch(reqs)
    assert all(r.cached for r in again) and g2.requests_sent == 0
    assert [r.text for r in again] == [r.text for r in res]


def test_http_500s_are_retried_with_backoff(katan_echo, tmp_path):
    srv = katan_echo("--error-rate", "0.5")
    g = Gateway(tmp_path / "cache", concurrency=4, max_retries=12, backoff_initial_s=0.02, backoff_max_s=0.1)
    reqs = [ChatRequest([{"role": "user", "content": f"ping {i}"}], "openai/echo", api_base=srv.api_base,
                        max_tokens=8, id=str(i)) for i in range(24)]
    res = g.batch(reqs)
    assert all(r.ok for r in res), [r.error for r in res if not r.ok]
    retries = sum(r.attempts - 1 for r in res)
    assert retries > 0  # with p=0.5 per request, 24 first tries all succeeding is ~6e-8
    assert g.requests_sent == sum(r.attempts for r in res)
    assert g.usage_summary()["default"]["retries"] == retries


def test_persistent_outage_is_reported_not_raised(katan_echo, tmp_path):
    srv = katan_echo("--timeout-after", "1")
    g = Gateway(None, max_retries=2, backoff_initial_s=0.01, backoff_max_s=0.02)
    res = g.batch([ChatRequest([{"role": "user", "content": f"x{i}"}], "openai/echo", api_base=srv.api_base, max_tokens=4)
                   for i in range(3)])
    assert sum(r.ok for r in res) <= 1
    failed = [r for r in res if not r.ok]
    assert failed and all(r.attempts == 3 and "retries exhausted" in r.error for r in failed)
