"""Gateway behaviour without a network: LiteLLM's mock_response, and the local backend on a tiny
random-initialised llama (built from a config, SmolLM2 tokenizer)."""

import json
from dataclasses import replace

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


def test_token_budget_splits_long_prompts_into_their_own_forward_passes(tiny_llama, monkeypatch):
    from progra_core.llm import backends, local

    assert local.token_batches([0, 1, 2], [5041, 4923, 7726], 8, 8192) == [[0], [1], [2]]
    assert local.token_batches([0, 1, 2, 3], [900, 1000, 1100, 3000], 8, 8192) == [[0, 1, 2], [3]]
    assert local.token_batches([0, 1, 2], [10, 10, 10], 2, None) == [[0, 1], [2]]
    passes = []
    real = local.token_batches
    monkeypatch.setattr(local, "token_batches", lambda *a: passes.append(r := real(*a)) or r)
    reqs = [ChatRequest([{"role": "user", "content": "x " * n}], "local/tiny", max_tokens=3, id=str(n)) for n in (2, 3, 40)]
    backend = backends.get_backend(str(tiny_llama))
    n = [len(backend.tokenizer(backend._prompt(r.messages), add_special_tokens=False)["input_ids"]) for r in reqs]
    g = Gateway(None, local_batch_size=8, local_batch_tokens=2 * n[1] + 1, local_models={"tiny": str(tiny_llama)})
    assert all(r.ok for r in g.batch(reqs))
    assert passes == [[[0, 1], [2]]]  # the two short prompts share a pass; the long one goes alone


def test_unknown_local_model_reports_error(tmp_path):
    g = Gateway(None, models_root=tmp_path)
    (r,) = g.batch([ChatRequest([{"role": "user", "content": "hi"}], "local/does-not-exist")])
    assert r.error and "unknown local model" in r.error


def test_choice_scores_match_a_full_forward_pass(tiny_llama):
    """The KV-cached scorer picks what summed log-probabilities over full sequences pick."""
    import torch

    from progra_core.llm.backends import get_backend

    b = get_backend(str(tiny_llama))
    choices = ["cd(", "ls(", "mkdir(", "sort_lines(", "]"]
    for content in ("go to the folder", "list the files please", "x"):
        req = ChatRequest([{"role": "user", "content": content}], "local/tiny", prefix="[", extra={"choices": choices})
        (got,) = b.choose([req])
        prompt = b.tokenizer(b._prompt(req.messages) + "[", add_special_tokens=False)["input_ids"]
        scores = []
        for c in choices:
            ids = b.tokenizer(c, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(b.model(input_ids=torch.tensor([prompt + ids])).logits[0].float(), -1)
            scores.append(sum(float(logp[len(prompt) + k - 1, t]) for k, t in enumerate(ids)))
        assert got.text == "[" + choices[max(range(len(choices)), key=scores.__getitem__)]


def test_grouped_choice_weighs_closing_against_all_ways_to_go_on():
    """Close vs go on is decided by total probability: ``)`` at 0.3 loses to three arguments at
    0.2 + 0.25 + 0.25, although it beats each of them alone (the ungrouped argmax picks it)."""
    import math

    from progra_core.llm.guided import _groups
    from progra_core.llm.local import _pick

    choices = [", a=", ", b=", ", c=", ")"]
    scores = [math.log(p) for p in (0.2, 0.25, 0.25, 0.3)]
    plain = ChatRequest([{"role": "user", "content": "x"}], "local/tiny", extra={"choices": choices})
    grouped = ChatRequest([{"role": "user", "content": "x"}], "local/tiny", extra={"choices": choices, "groups": _groups(choices)})
    assert _groups(choices) == ["go", "go", "go", "close"] and _groups(["]", ", cd("]) == ["close", "go"]
    assert choices[_pick(scores, plain)] == ")"
    assert choices[_pick(scores, grouped)] == ", b="  # the go group wins, then its best (first of the tie)
    closing = [math.log(p) for p in (0.1, 0.1, 0.1, 0.7)]
    assert choices[_pick(closing, grouped)] == ")"


def test_guided_calls_always_parse_and_follow_the_schema(tiny_llama):
    """Even a random model answers with a parsable list of known functions and parameter names."""
    from progra_core.calls import parse_calls
    from progra_core.llm.guided import guided_calls, leading_literal

    assert leading_literal("'a, b', x=1)") == "'a, b'" and leading_literal("12)") == "12" and leading_literal("oops") is None
    assert leading_literal("[1, 2], y") == "[1, 2]"
    tools = [{"name": "cd", "parameters": {"properties": {"folder": {"type": "string"}}}},
             {"name": "sort", "parameters": {"properties": {"file_name": {"type": "string"}, "reverse": {"type": "boolean"}}}},
             {"name": "wait", "parameters": {"properties": {"seconds": {"type": "integer"}}}}]
    g = Gateway(None, local_models={"tiny": str(tiny_llama)})
    reqs = [ChatRequest([{"role": "user", "content": f"task {i}"}], "local/tiny", prefix="[", max_tokens=8, id=str(i)) for i in range(6)]
    out = guided_calls(g, reqs, [json.dumps(tools)] * 6, max_calls=2, value_tokens=6)
    params = {t["name"]: set(t["parameters"]["properties"]) for t in tools}
    for r in out:
        assert r.ok and r.text.startswith("[")
        if r.text.endswith("]"):
            calls = parse_calls(r.text)
            assert 1 <= len(calls) <= 2
            assert all(c.name in params and set(c.args) <= params[c.name] for c in calls)
            assert all(isinstance(c.args.get("reverse", True), bool) for c in calls)
    assert any(r.text.endswith("]") for r in out)
    (empty,) = guided_calls(g, reqs[:1], [None])
    assert empty.ok and empty.text == ""


def test_guided_json_keeps_the_exemplar_shape_and_rewrites_its_prose(tiny_llama):
    """A random model still returns parsable JSON with the template's keys and identifiers."""
    from progra_core.llm.guided import guided_json, json_pieces

    template = {"GorillaFileSystem": {"root": {"alex": {"type": "directory", "contents": {
        "a.txt": {"type": "file", "content": "Meeting notes from Monday."}, "n": [3, "two words", True]}}}}}
    literals, originals = json_pieces(template)
    assert originals == ["Meeting notes from Monday.", "two words"]
    assert json.loads(literals[0] + originals[0] + literals[1] + originals[1] + literals[2]) == template
    g = Gateway(None, local_models={"tiny": str(tiny_llama)})
    reqs = [ChatRequest([{"role": "user", "content": f"config {i}"}], "local/tiny", temperature=1.0, seed=i, id=str(i))
            for i in range(3)]
    for r in guided_json(g, reqs, [template] * 3, value_tokens=6):
        got = json.loads(r.text)
        node = got["GorillaFileSystem"]["root"]["alex"]
        assert node["type"] == "directory" and node["contents"]["a.txt"]["type"] == "file"
        assert node["contents"]["n"][0] == 3 and node["contents"]["n"][2] is True


def test_choices_are_sampled_above_temperature_zero_and_reproducible(tiny_llama):
    """K voters / R reviewers over a closed set must be able to disagree; a rerun draws the same."""
    g = Gateway(None, local_models={"tiny": str(tiny_llama)})
    choices = ["yes", "no", "maybe", "never"]
    reqs = [ChatRequest([{"role": "user", "content": "ok?"}], "local/tiny", temperature=5.0, seed=1, sample=k,
                        extra={"choices": choices}) for k in range(12)]
    first = [r.text for r in g.batch(reqs)]
    assert len(set(first)) > 1 and set(first) <= set(choices)
    assert [r.text for r in g.batch(reqs)] == first
    greedy = {r.text for r in g.batch([replace(q, temperature=0.0) for q in reqs])}
    assert len(greedy) == 1


def test_strict_gateway_raises_for_endpoint_failures_only_after_trying_every_request(tmp_path):
    """A 400 is the item's outcome; an exhausted 429 or an auth failure is the endpoint's: a strict
    gateway raises for it, and the answers that did arrive are cached for the rerun."""
    import litellm
    import pytest

    from progra_core.llm import EndpointUnavailable

    g = Gateway(tmp_path / "cache", max_retries=1, backoff_initial_s=0.01, backoff_max_s=0.02, strict=True)
    bad = req(1, extra={"mock_response": litellm.BadRequestError("too long", model="test-model", llm_provider="openai")})
    ok, item_error = g.batch([req(0), bad])
    assert ok.ok and not item_error.ok and not item_error.retryable  # no raise: an item-level reject
    for exc in (litellm.RateLimitError("slow down", model="test-model", llm_provider="openai"),
                litellm.AuthenticationError("bad key", model="test-model", llm_provider="openai")):
        with pytest.raises(EndpointUnavailable, match="1 of 3 requests") as info:
            g.batch([req(2), req(3, extra={"mock_response": exc}), req(4)])
        assert info.value.failed[0].retryable and info.value.total == 3
    assert g._cached(req(2)) is not None and g._cached(req(4)) is not None
    lenient = Gateway(None, max_retries=0)
    (r,) = lenient.batch([req(5, extra={"mock_response": litellm.RateLimitError("x", model="m", llm_provider="openai")})])
    assert r.retryable and "RateLimitError" in r.error


def test_openai_compatible_servers_skip_litellm_and_unknown_models_get_a_price():
    """A server named by api_base that speaks OpenAI's API is sent through the openai SDK; other
    providers and LiteLLM-only options go through LiteLLM, where a model missing from its cost
    map is registered once (at zero) so the lookup stops failing on every call."""
    import litellm

    from progra_core.llm import transport

    base = "http://127.0.0.1:9/v1"
    assert transport.direct(ChatRequest([], "openai/echo", api_base=base))
    assert transport.direct(ChatRequest([], "hosted_vllm/qwen", api_base=base, extra={"top_p": 0.9}))
    assert not transport.direct(ChatRequest([], "openai/gpt-4o"))  # OpenAI's own API: through LiteLLM
    assert not transport.direct(ChatRequest([], "anthropic/claude", api_base=base))
    assert not transport.direct(ChatRequest([], "openai/echo", api_base=base, extra={"mock_response": "x"}))
    name = "openai/progra-unpriced-test-model"
    with pytest.raises(Exception, match="mapped"):  # unknown to LiteLLM's cost map
        litellm.get_model_info(name)
    transport.price_unknown(name)
    assert litellm.get_model_info(name)["input_cost_per_token"] == 0.0
    known = litellm.get_model_info("openai/gpt-4o")["input_cost_per_token"]
    transport.price_unknown("openai/gpt-4o")
    assert litellm.get_model_info("openai/gpt-4o")["input_cost_per_token"] == known > 0  # known prices left alone


def test_endpoint_unavailable_survives_pickling_to_another_process():
    """Dask and Ray send a shard's exception back pickled: it must arrive as itself (it arrived
    as a TypeError from its two-argument __init__ before)."""
    import pickle

    from progra_core.llm.errors import EndpointUnavailable
    from progra_core.llm.types import ChatResult

    failed = [ChatResult(text=None, role="generator", id="r1", model="openai/echo", error="HTTP 503", retryable=True)]
    e = pickle.loads(pickle.dumps(EndpointUnavailable(failed, 3)))
    assert isinstance(e, EndpointUnavailable) and e.total == 3 and e.failed[0].id == "r1" and "1 of 3" in str(e)


def test_a_closed_gateway_unloads_the_local_models_only_it_used(tiny_llama, tmp_path):
    """Evaluation closes its gateway after each model with ``unload_models``: the base model (and
    its prefix cache) is unloaded before the trained one loads, while a model another open gateway still uses (the user
    simulator beside a policy) stays loaded and is shared, never loaded twice."""
    import shutil

    from progra_core.llm import backends

    other = shutil.copytree(tiny_llama, tmp_path / "other")
    backends.clear_backends()
    ask = lambda g, m: g.batch([ChatRequest([{"role": "user", "content": "hi"}], f"local/{m}", max_tokens=2)])  # noqa: E731
    base = Gateway(None, local_models={"tiny": str(tiny_llama)})
    assert ask(base, "tiny")[0].ok and backends.loaded_backends() == 1
    sim = Gateway(None, local_models={"tiny": str(tiny_llama), "other": str(other)})
    assert ask(sim, "tiny")[0].ok and backends.loaded_backends() == 1  # shared, not loaded twice
    base.close(unload_models=True)
    assert backends.loaded_backends() == 1  # sim still holds it
    assert ask(sim, "other")[0].ok and backends.loaded_backends() == 2
    sim.close(unload_models=True)
    assert backends.loaded_backends() == 0
    # a plain close (a stage's shard) keeps the model for the process's next gateway
    shard = Gateway(None, local_models={"tiny": str(tiny_llama)})
    assert ask(shard, "tiny")[0].ok
    shard.close()
    assert backends.loaded_backends() == 1
    again = Gateway(None, local_models={"tiny": str(tiny_llama)})
    assert ask(again, "tiny")[0].ok and backends.loaded_backends() == 1
    again.close(unload_models=True)
    assert backends.loaded_backends() == 0
    # models nobody holds stay loaded up to a bound, the oldest going first
    for k in range(backends.IDLE_BACKENDS + 2):
        backends.get_backend(str(tiny_llama), prefix_cache_mb=k)
    assert backends.loaded_backends() == backends.IDLE_BACKENDS
    # before a training job, the idle ones go; one a gateway still holds stays
    held = Gateway(None, local_models={"tiny": str(tiny_llama)})
    assert ask(held, "tiny")[0].ok
    assert backends.drop_idle_backends() == backends.IDLE_BACKENDS - 1 and backends.loaded_backends() == 1
    held.close(unload_models=True)
    backends.clear_backends()


def test_a_tasks_gateway_resolves_the_embedded_policy_to_its_folder(tmp_path, monkeypatch, embedded_model):
    """The path SFT, PAG-RL, evaluation and export-model load the base policy from: built by the one
    gateway builder (tasks.limits.gateway_for), absolute, the converted embedded model. Before, the
    helper still called a constructor that had moved; only a run on `local/smollm2` reached it."""
    from pathlib import Path

    from progra_core.config import load_config
    from tasks.models import model_path, policy_path

    monkeypatch.setenv("PROGRA_MODELS_DIR", str(embedded_model.parent))
    cfg = load_config("embedded", overrides=[f"storage.root={tmp_path / 'root'}"])
    assert policy_path(cfg, cfg.storage.root) == str(Path(embedded_model).resolve())
    assert model_path(cfg, cfg.storage.root, "org/model") == "org/model"
