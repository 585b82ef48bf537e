"""Prefix reuse (progra_core/llm/prefix.py): every path that reuses a KV cache gives what it gives
without reuse, token for token, and the cache stays within its memory bound."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from progra_core.llm import Gateway
from progra_core.llm.prefix import PrefixCache, common_prefix
from progra_core.llm.types import ChatRequest

SYSTEM = "You call tools. " + " ".join(f"fn_{k}(path: str, depth: int) lists entries under path." for k in range(40))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=40), st.lists(st.integers(0, 3), max_size=40))
def test_common_prefix_matches_the_definition(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    assert common_prefix(a, b) == n == common_prefix(tuple(a), b)


@pytest.fixture(scope="module")
def sharp_llama(tiny_llama, tmp_path_factory):
    """The tiny llama with large random weights: peaked next-token distributions, so a wrong key,
    value or position anywhere in the reused cache changes what is generated (at the default
    initialisation the tiny model's logits are nearly flat and hide such errors)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig.from_pretrained(tiny_llama)
    cfg.initializer_range = 0.5
    path = tmp_path_factory.mktemp("sharp") / "sharp-llama"
    LlamaForCausalLM(cfg).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def backends(sharp_llama):
    """The same model twice: with a prefix cache and the in-place decode cache, and with neither."""
    from progra_core.llm.local import LocalBackend

    return LocalBackend(str(sharp_llama), prefix_cache_mb=64, static_cache=True), LocalBackend(str(sharp_llama))


@pytest.fixture(scope="module")
def static_only(sharp_llama):
    from progra_core.llm.local import LocalBackend

    return LocalBackend(str(sharp_llama), static_cache=True)


def _conv(k: int, extra: list[dict] | None = None) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"task {k}: list /data/{k} two levels deep"},
            *(extra or [])]


def test_cache_bounds_supersedes_and_never_changes_what_it_holds(backends):
    import torch

    from progra_core.llm.local import _cache_of

    on, _ = backends
    tok, model = on.tokenizer, on.model
    ids = tok(on._prompt(_conv(0)), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        full = _cache_of(model(input_ids=torch.tensor([ids]), use_cache=True))
        head = _cache_of(model(input_ids=torch.tensor([ids[:40]]), use_cache=True))
    cache = PrefixCache(max_bytes=10**9, min_tokens=8)
    assert cache.store(ids[:40], head) and cache.lookup(ids)[0] == 40
    assert not cache.store(ids[:39], head)  # the cache must hold exactly the ids it is stored under
    before = full.layers[0].keys.clone()
    assert cache.store(ids, full) and len(cache) == 1  # the 40-token entry is a prefix of this one: dropped
    n, fork = cache.lookup(ids)
    assert n == len(ids) - 1  # one token is always left to compute
    with torch.no_grad():
        model(input_ids=torch.tensor([ids[n:]]), use_cache=True, cache=fork)
    assert fork.get_seq_length() == len(ids) and torch.equal(full.layers[0].keys, before)  # the fork grew, not the entry
    assert cache.lookup([tok.eos_token_id] * 50) == (0, None)  # nothing shared: a miss
    small = PrefixCache(max_bytes=cache.bytes + 1, min_tokens=8)  # room for one entry
    other = tok(on._prompt(_conv(1)), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        second = _cache_of(model(input_ids=torch.tensor([other]), use_cache=True))
    assert small.store(ids, full) and small.store(other, second)
    assert len(small) == 1 and small.bytes <= small.max_bytes and small.stats.evicted == 1
    assert small.lookup(other)[0] == len(other) - 1


@pytest.mark.parametrize("variant", ["prefix+static", "static"])
def test_generation_with_reuse_equals_generation_without(backends, static_only, variant):
    """A conversation's steps (lone and batched, greedy and seeded sampling): same tokens with the
    prefix cache and the preallocated decode cache as with neither."""
    on, off = backends
    if variant == "static":
        on = static_only
    else:
        on.prefix.clear()
    for temperature in (0.0, 0.8):
        step1 = [ChatRequest(_conv(k), "local/tiny", max_tokens=12, temperature=temperature, seed=5, id=str(k)) for k in range(3)]
        a, b = on.generate(step1, 8, None), off.generate(step1, 8, None)  # one batch of three sharing the system prompt
        assert [r.text for r in a] == [r.text for r in b]
        for k in range(3):  # then each conversation alone, twice: the second step extends the first
            convo = _conv(k, [{"role": "assistant", "content": a[k].text}, {"role": "user", "content": "and now /tmp"}])
            for _ in range(2):
                req = [ChatRequest(convo, "local/tiny", max_tokens=12, temperature=temperature, seed=5)]
                x, y = on.generate(req, 8, None), off.generate(req, 8, None)
                assert x[0].text == y[0].text
                convo = convo + [{"role": "assistant", "content": x[0].text}, {"role": "user", "content": "again"}]
    if on.prefix is not None:
        s = on.prefix.stats
        assert s.hits >= 8 and s.reuse > 0.5, s  # most prompt tokens came from the cache


def test_guided_decoding_with_reuse_equals_guided_decoding_without(sharp_llama):
    """guided_calls asks one choose() question after another of the same prompt: the answers are
    the same with the prompt's cache reused, and the prompt is computed once per answer."""
    from progra_core.llm import backends
    from progra_core.llm.guided import guided_calls

    tools = json.dumps([{"name": "cd", "parameters": {"properties": {"folder": {"type": "string"}}}},
                        {"name": "sort", "parameters": {"properties": {"file_name": {"type": "string"},
                                                                       "reverse": {"type": "boolean"}}}}])
    reqs = [ChatRequest(_conv(k), "local/tiny", prefix="[", max_tokens=8, id=str(k)) for k in range(3)]
    texts = []
    for mb in (64, 0):
        backends.clear_backends()
        g = Gateway(None, local_models={"tiny": str(sharp_llama)}, local_prefix_cache_mb=mb, local_static_cache=bool(mb))
        texts.append([r.text for r in guided_calls(g, reqs, [tools] * 3, max_calls=2, value_tokens=6)])
        if mb:
            stats = backends.get_backend(str(sharp_llama), dtype="auto", adapter=None, prefix_cache_mb=mb,
                                      static_cache=True).prefix.stats
    backends.clear_backends()
    assert texts[0] == texts[1]
    assert stats.hits >= 3 and stats.reuse > 0.7, stats


def test_rl_sampler_with_reuse_equals_sampler_without(backends):
    """A GRPO group (four copies of a prompt), then its diverged continuations: the same tokens and
    the same sampling log-probabilities with the shared prefix computed once."""
    from progra_core.train.samplers import hf_sampler

    _, off = backends
    tok, model = off.tokenizer, off.model
    prompt = tok(off._prompt(_conv(0)), add_special_tokens=False)["input_ids"]
    outs = []
    for mb, static in ((64, True), (0, False)):
        gen = hf_sampler(model, tok, max_new_tokens=10, temperature=1.0, batch_size=8, seed=3, prefix_cache_mb=mb,
                         static_cache=static)
        first = gen([prompt] * 4)
        second = gen([prompt + g.ids + tok("ok", add_special_tokens=False)["input_ids"] for g in first])
        outs.append(first + second)
    for x, y in zip(*outs, strict=True):
        assert x.ids == y.ids
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)


def test_packed_choice_scoring_equals_scoring_each_choice_alone(backends):
    """choose() feeds every choice in one row after the prompt (block-diagonal mask, each choice
    at its own positions): the log-probabilities equal those of prompt + that choice alone."""
    import torch

    from progra_core.llm.local import _cache_of

    _, off = backends
    tok, model = off.tokenizer, off.model
    ids = tok(off._prompt(_conv(2)), add_special_tokens=False)["input_ids"]
    choices = [tok(c, add_special_tokens=False)["input_ids"] for c in ("cd", "sort_files_by_name", "mv", "ls -a -l")]
    assert sorted(len(c) for c in choices)[-1] > 2  # a choice of several tokens, or the mask is not exercised
    with torch.no_grad():
        cache = _cache_of(model(input_ids=torch.tensor([ids]), use_cache=True))
        packed = off._score_packed(cache, len(ids), choices)
        at = 0
        for c in choices:
            alone = torch.log_softmax(model(input_ids=torch.tensor([ids + c])).logits[0].float(), -1)
            for n in range(1, len(c)):  # position of the choice's token n-1 -> its token n
                assert torch.allclose(packed[at + n - 1], alone[len(ids) + n - 1], atol=1e-4)
            at += len(c) - 1
    assert at == packed.shape[0]


def test_generation_never_asks_transformers_to_auto_compile(static_only, monkeypatch):
    """With a static cache on CUDA, transformers compiles the decode step (CUDA graphs) unless
    ``disable_compile`` is set, and recompiles for every new cache length. Both samplers that
    decode into a static cache (evaluation's backend, the RL sampler) must pass the flag; the
    check transformers makes is recorded here, on CPU."""
    from progra_core.train.samplers import hf_sampler

    seen: list[bool] = []
    model, tok = static_only.model, static_only.tokenizer
    monkeypatch.setattr(model, "_valid_auto_compile_criteria", lambda kwargs, config: seen.append(config.disable_compile) or False)
    static_only.generate([ChatRequest(_conv(0), "local/tiny", max_tokens=4, id="a")])
    prompt = tok(static_only._prompt(_conv(1)), add_special_tokens=False)["input_ids"]
    hf_sampler(model, tok, max_new_tokens=4, temperature=1.0, seed=0, static_cache=True)([prompt, prompt])
    assert len(seen) >= 2 and all(seen), seen


def test_loop_stop_fires_on_the_third_copy_of_a_window_and_never_on_text_that_does_not_repeat():
    import torch

    from progra_core.llm.local import LoopStop

    prompt = [7, 7, 7, 7, 7, 7, 7, 7]  # repeats in the prompt never count
    loop = [1, 2, 3] + [10, 11, 12, 13, 14] * 8
    plain = list(range(100, 100 + len(loop)))
    stop = LoopStop(len(prompt), window=5)
    fired = {}
    for n in range(1, len(loop) + 1):
        ids = torch.tensor([prompt + loop[:n], prompt + plain[:n]])
        out = stop(ids, None)
        for row in out.nonzero().flatten().tolist():
            fired.setdefault(row, n)
    # the window [10..14] starts at 3, 8 and 13: its third copy is complete at 18 tokens
    assert fired == {0: 18} and stop.stopped_at == {0: 18}
    assert stop.cut([loop, plain]) == [loop[:18], plain]


def test_a_looping_model_is_cut_to_a_prefix_of_what_it_would_write(tiny_llama):
    """A model whose weights are all zero writes token 0 forever under greedy decoding; with the
    loop stop the row is exactly the plain output's first 18 tokens (window 6, three copies), and
    no end-of-sequence token is added (a loop stop is a length cut)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from progra_core.llm.hf import cache_kwarg
    from progra_core.llm.local import prefix_generate

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    contexts = [tok(f"task {k}: list /data/{k}", add_special_tokens=False)["input_ids"] for k in range(2)]
    kw = {"max_new_tokens": 60, "do_sample": False, "pad_token_id": tok.pad_token_id}
    with torch.no_grad():
        plain = prefix_generate(model, contexts, tok.pad_token_id, None, cache_kwarg(model), loop_window=None, **kw)
        cut = prefix_generate(model, contexts, tok.pad_token_id, None, cache_kwarg(model), loop_window=6, **kw)
    assert plain == [[0] * 60, [0] * 60]
    assert cut == [[0] * 18, [0] * 18]
