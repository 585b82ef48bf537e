"""Gateway behaviour without a network: LiteLLM's mock_response, and the local backend on a tiny
random-initialised llama (built from a config, SmolLM2 tokenizer)."""

import pytest

from progra_core.llm import ChatRequest, Gateway


def req(i, **kw):
    return ChatRequest([{"role": "user", "content": f"question {i}"}], kw.pop("model", "openai/test-model"), id=str(i),
                       role=kw.pop("role", "generator"), extra=kw.pop("extra", {"mock_response": f"answer {i}"}), **kw)


def test_batch_order_cache_and_accounting(tmp_path):
    g = Gateway(tmp_path / "cache", concurrency=3)
    res = g.batch([req(i) for i in range(6)])
    assert [r.text for r in res] == [f"answer {i}" for i in range(6)]
    assert [r.id for r in res] == [str(i) for i in range(6)]
    assert g.requests_sent == 6 and not any(r.cached for r in res)
    g2 = Gateway(tmp_path / "cache")  # a new process-equivalent: cache is on disk
    again = g2.batch([req(i) for i in range(6)])
    assert all(r.cached for r in again) and g2.requests_sent == 0
    assert [r.text for r in again] == [r.text for r in res]
    s = g.usage_summary()["generator"]
    assert s["calls"] == 6 and s["errors"] == 0 and s["completion_tokens"] > 0


def test_sample_index_separates_cache_slots(tmp_path):
    g = Gateway(tmp_path / "cache")
    a = g.batch([req(1, sample=0), req(1, sample=1)])
    assert g.requests_sent == 2 and not any(r.cached for r in a)


def test_non_transient_errors_are_results_not_exceptions(tmp_path):
    import litellm

    g = Gateway(tmp_path / "cache", max_retries=3, backoff_initial_s=0.01)
    bad = req(1, extra={"mock_response": litellm.BadRequestError("nope", model="test-model", llm_provider="openai")})
    (r,) = g.batch([bad])
    assert r.error and "BadRequestError" in r.error and r.attempts == 1
    assert g.batch([req(2)])[0].ok


def test_transient_errors_are_retried_then_reported(tmp_path):
    import litellm

    g = Gateway(tmp_path / "cache", max_retries=2, backoff_initial_s=0.01, backoff_max_s=0.02)
    rl = req(1, extra={"mock_response": litellm.RateLimitError("slow down", model="test-model", llm_provider="openai")})
    (r,) = g.batch([rl])
    assert r.attempts == 3 and "retries exhausted" in r.error
    assert g.usage_summary()["generator"]["retries"] == 2
    # errors are never cached
    assert g._cached(rl) is None


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, embedded_model):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(embedded_model)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    path = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_local_backend_batches_and_caches(tmp_path, tiny_llama):
    g = Gateway(tmp_path / "cache", local_batch_size=4, local_models={"tiny": str(tiny_llama)})
    reqs = [ChatRequest([{"role": "user", "content": "x " * (i + 1)}], "local/tiny", max_tokens=5, id=str(i)) for i in range(10)]
    res = g.batch(reqs)
    assert [r.id for r in res] == [str(i) for i in range(10)]
    assert all(r.ok and r.completion_tokens <= 5 for r in res)
    assert [r.prompt_tokens for r in res] == sorted(r.prompt_tokens for r in res)  # longer prompt, more tokens
    assert g.requests_sent == 10
    assert all(r.cached for r in g.batch(reqs)) and g.requests_sent == 10
    # greedy is deterministic regardless of batch composition order
    solo = Gateway(None, local_batch_size=1, local_models={"tiny": str(tiny_llama)}).batch(reqs[:3])
    assert [r.prompt_tokens for r in solo] == [r.prompt_tokens for r in res[:3]]


def test_unknown_local_model_reports_error(tmp_path):
    g = Gateway(None, models_root=tmp_path)
    (r,) = g.batch([ChatRequest([{"role": "user", "content": "hi"}], "local/does-not-exist")])
    assert r.error and "unknown local model" in r.error
