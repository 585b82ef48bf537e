"""Samplers for rollouts: contexts (token ids) in, one :class:`Generation`
each out, with every token's sampling log-probability (what TRL's importance-sampling correction
compares with the trainer's). ``hf_sampler`` samples with transformers; ``vllm_sampler`` through
TRL's vLLM engine.

torch and transformers are imported inside the functions that use them."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from progra_core.prompts.policy import ANSWER_STOP

__all__ = ["Generation", "GenerateFn", "hf_sampler", "vllm_sampler", "kept_tokens", "merged_named_params"]


@dataclass
class Generation:
    """What the sampler drew for one context: the token ids (ending at EOS when it stopped) and
    each token's log-probability under the sampling distribution (None when unknown)."""

    ids: list[int]
    logprobs: list[float] | None = None


#: contexts (token ids) -> one Generation (or a bare list of ids) per context.
GenerateFn = Callable[[list[list[int]]], list["Generation | list[int]"]]


def kept_tokens(ids: Sequence[int], eos: set[int] | Sequence[int], decode: Callable[[list[int]], str] | None,
                stop: str | None = ANSWER_STOP) -> int:
    """How many drawn tokens an action keeps: through the first EOS, or through the token that
    completes ``stop`` if that comes first. Cutting after sampling equals stopping there (each token
    depends only on those before it), so samplers that cannot stop on a string cut the same way."""
    n = next((k + 1 for k, t in enumerate(ids) if t in eos), len(ids))
    if not stop or decode is None or stop not in decode(list(ids[:n])):
        return n
    lo, hi = 1, n  # the shortest prefix whose text holds the stop: prefixes only grow
    while lo < hi:
        mid = (lo + hi) // 2
        if stop in decode(list(ids[:mid])):
            hi = mid
        else:
            lo = mid + 1
    return lo


def hf_sampler(model, tokenizer, max_new_tokens: int, temperature: float = 1.0, batch_size: int = 8,
               seed: int | None = None, prefix_cache_mb: int = 0, static_cache: bool = True) -> GenerateFn:
    """Batched sampling with a transformers model, cut after the first EOS or :data:`ANSWER_STOP`
    (:func:`kept_tokens`; generation stops there too); each token comes with
    its log-probability under the distribution it was drawn from (logits / T), the quantity the
    trainer recomputes. With ``prefix_cache_mb``, the prefix the contexts of a call share (a
    group's prompt; the docs all episodes of an environment share) is computed once and its KV
    cache forked to every row (:func:`~progra_core.llm.local.prefix_generate`); the cache lives as
    long as this sampler, i.e. one training step, because the weights change after it."""
    import torch
    from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

    from progra_core.llm.hf import cache_kwarg
    from progra_core.llm.local import prefix_generate
    from progra_core.llm.prefix import PrefixCache

    prefix = PrefixCache(prefix_cache_mb * 2**20) if prefix_cache_mb > 0 else None
    cache_kw = cache_kwarg(model.get_base_model() if hasattr(model, "get_base_model") else model)  # PEFT passes it on

    cfg_eos = getattr(model.generation_config, "eos_token_id", None)
    eos = sorted({tokenizer.eos_token_id, *(cfg_eos if isinstance(cfg_eos, list) else [cfg_eos])} - {None})
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rng = random.Random(seed)

    # only temperature shapes the distribution (no top-k/top-p, none of the model's own defaults):
    # what the trainer recomputes as logits / T
    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                               temperature=temperature if temperature > 0 else None, top_p=1.0, top_k=0,
                               eos_token_id=eos, pad_token_id=pad, stop_strings=[ANSWER_STOP])

    class _Record(LogitsProcessor):
        """Keeps each step's log-softmax(logits / T) and, one step later, the drawn token's entry
        (one [batch, vocab] tensor alive at a time). transformers runs user processors before
        its temperature warper, so the temperature is applied here."""

        def __init__(self):
            self.prev, self.out = None, []

        def __call__(self, input_ids, scores):
            if self.prev is not None:
                self.out.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))
            self.prev = torch.log_softmax(scores.float() / (temperature if temperature > 0 else 1.0), -1)
            return scores

    def generate(contexts: list[list[int]]) -> list[Generation]:
        out: list[Generation] = []
        for b in range(0, len(contexts), batch_size):
            chunk = contexts[b:b + batch_size]
            rec = _Record()
            with torch.no_grad():
                new = prefix_generate(model, chunk, pad, prefix, cache_kw, seed=rng.randrange(2**31) if seed is not None else None,
                                      static=static_cache,
                                      generation_config=gen_cfg, logits_processor=LogitsProcessorList([rec]), tokenizer=tokenizer)
            if rec.prev is not None:
                last = torch.tensor([[row[-1]] for row in new], device=rec.prev.device)
                rec.out.append(rec.prev.gather(1, last).squeeze(1))
            logps = torch.stack(rec.out, 1).tolist() if rec.out else [[] for _ in chunk]
            for row, lp in zip(new, logps, strict=True):
                n = kept_tokens(row, eos, tokenizer.decode)
                out.append(Generation(row[:n], lp[:n]))
        return out

    return generate


def vllm_sampler(engine, max_new_tokens: int, eos_ids: Sequence[int] = (),
                 decode: Callable[[list[int]], str] | None = None) -> GenerateFn:
    """Sampling through TRL's vLLM engine (``trainer.vllm_generation``, colocate or server mode):
    one ``generate`` call per lockstep round, each context once, at most ``max_new_tokens`` per
    action (the engine's own limit, the whole stream length, is restored after). vLLM returns each
    token's log-probability after temperature (TRL builds it with ``processed_logprobs``), which is
    what importance-sampling correction compares with the trainer's recomputed ones. TRL syncs the
    LoRA-merged weights into the engine before each step's ``rollout_func``. Single process: in
    server mode TRL gathers prompts across ranks, and lockstep rounds differ per rank. TRL's engine
    takes no stop string, so ``decode`` cuts each action after :data:`ANSWER_STOP` as hf_sampler does."""
    eos = set(eos_ids)

    def generate(contexts: list[list[int]]) -> list[Generation]:
        saved = engine.max_completion_length
        engine.max_completion_length = max_new_tokens
        try:
            _, completions, logprobs, _ = engine.generate(prompts=[list(c) for c in contexts], images=None, num_generations=1)
        finally:
            engine.max_completion_length = saved
        if len(completions) != len(contexts):
            raise RuntimeError(f"vLLM returned {len(completions)} completions for {len(contexts)} contexts")
        out = []
        for k, ids in enumerate(completions):
            ids = list(ids)
            n = kept_tokens(ids, eos, decode)
            lp = None if logprobs is None else [float("nan") if t[0] is None else float(t[0]) for t in logprobs[k][:n]]
            out.append(Generation(ids[:n], lp))
        return out

    return generate


def merged_named_params(model, fix_name: Callable[[str], str] = lambda n: n):
    """(vLLM name, tensor) for every weight of a PEFT LoRA model with its adapters merged, computed
    out of place: each LoRA layer's ``W + delta`` is a new tensor (one layer at a time) and the base
    weights are never written. TRL's own sync merges into the base in place and unmerges after;
    in bf16 ``(W + d) - d`` is not ``W``, so the frozen base under the policy and the KL reference
    drifts a little more every step (trl#6688). The merged values are PEFT's (the sum in the wider
    of the two dtypes, rounded once). Plain LoRA layers only: DoRA or a LoRA bias is refused."""
    import torch
    from peft.tuners.lora import LoraLayer

    layers = {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    for name, m in layers.items():
        if any(a in m.lora_variant for a in m.active_adapters) or any(m.lora_bias.get(a) for a in m.active_adapters):
            raise ValueError(f"{name}: only plain LoRA layers are merged out of place (no DoRA, no lora_bias)")
    for name, param in model.named_parameters():
        if model.prefix in name or "original_module" in name:  # the adapters' own weights; vLLM has none
            continue
        owner, _, leaf = name.rpartition(".base_layer.")
        weight = param.data
        if leaf == "weight" and owner in layers:
            m = layers[owner]
            for a in m.active_adapters:
                if a in m.lora_A:
                    delta = m.get_delta_weight(a)  # as PEFT's merge: the sum in the wider dtype, rounded once
                    weight = (weight.to(torch.promote_types(weight.dtype, delta.dtype)) + delta).to(param.dtype)
        yield fix_name(name.removeprefix("base_model.model.").replace(".base_layer", "")), weight
