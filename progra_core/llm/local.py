"""In-process generation for ``local/`` models: many requests per forward pass.

Requests are grouped by sampling settings, sorted by prompt length (little padding), and generated
in left-padded batches. One backend per model folder per process; a lock serialises generation so
concurrent stage threads share the weights instead of loading copies.

PEFT, torch, transformers are imported inside the functions that use them: heavy, and only some callers need them."""

from __future__ import annotations

import copy
import hashlib
import math
import random
import threading
import time
from collections import defaultdict
from collections.abc import Sequence

from progra_core.llm.hf import cache_kwarg, cpu_bf16, quiet_hf
from progra_core.llm.loops import LOOP_WINDOW, LoopStop
from progra_core.llm.prefix import PrefixCache, common_prefix, fork, reusable
from progra_core.llm.types import ChatRequest, ChatResult

__all__ = ["LocalBackend", "LoopStop", "LOOP_WINDOW", "prefix_generate", "resolve_dtype", "kv_batch_tokens", "CPU_BATCH_TOKENS"]


#: local/ batches on CPU: padded prompt tokens per forward pass (measured: past ~8k, padding a
#: batch to a long prompt costs more than batching saves)
CPU_BATCH_TOKENS = 8192

#: guided decoding: choice tokens scored in one packed forward pass (bounds the q x kv mask)
CHOICE_PACK_TOKENS = 512


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto``: bfloat16 on a CUDA device that supports it (half the memory, the tensor cores) and
    on a CPU with AMX tiles (:func:`~progra_core.llm.hf.cpu_bf16`: ~3x faster prefill), float32
    elsewhere (CPU bf16 matmuls are slow without AMX)."""
    if dtype != "auto":
        return dtype
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_bf16() else "float32"


def kv_batch_tokens(free_bytes: float, layers: int, kv_dim: int, hidden: int, intermediate: int, bytes_per: int,
                    share: float = 0.5) -> int:
    """Padded prompt tokens per forward pass that ``share`` of ``free_bytes`` holds: per token, the
    KV cache of every layer plus one layer's activations. Half the free memory by default: the
    generated tokens' cache and the allocator's fragmentation need the rest."""
    per_token = bytes_per * (2 * layers * kv_dim + 4 * hidden + 2 * intermediate)
    return max(1024, int(share * free_bytes / per_token))


class LocalBackend:
    def __init__(self, path: str, dtype: str = "auto", device: str | None = None, adapter: str | None = None,
                 prefix_cache_mb: int = 0, static_cache: bool = False):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        quiet_hf()
        self.path = path
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = resolve_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        if adapter:  # a trained LoRA adapter, merged once: generation then costs what the base costs
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        self.model = model.to(self.device)
        self.model.eval()
        self.context = getattr(self.model.config, "max_position_embeddings", None)
        self._cache_kw = cache_kwarg(self.model)
        self._lock = threading.Lock()
        self.prefix = PrefixCache(prefix_cache_mb * 2**20) if prefix_cache_mb > 0 else None
        self.static_cache = static_cache
        self.dtype = dtype
        self.auto_batch_tokens = self._device_batch_tokens(getattr(torch, dtype).itemsize)

    def _device_batch_tokens(self, bytes_per: int) -> int:
        """``batch_tokens="auto"``: on CUDA, what half the memory left after loading holds; on CPU,
        :data:`CPU_BATCH_TOKENS`."""
        if not self.device.startswith("cuda"):
            return CPU_BATCH_TOKENS
        import torch

        c = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else self.model.config
        heads = c.num_attention_heads
        kv_dim = c.hidden_size * (getattr(c, "num_key_value_heads", None) or heads) // heads
        free, _ = torch.cuda.mem_get_info(torch.device(self.device))
        return kv_batch_tokens(free, c.num_hidden_layers, kv_dim, c.hidden_size, c.intermediate_size, bytes_per)

    def _prompt(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def choose(self, reqs: Sequence[ChatRequest], batch_size: int = 8) -> list[ChatResult]:
        """Constrained decoding over a closed set: each request's ``extra["choices"]`` are scored by
        their summed token log-probability after the prompt (+ prefix); the answer is prefix + best.
        The prompt is computed once per answer: its KV cache comes from the prefix cache (guided
        decoding asks one question after another of the same prompt, each with a longer prefix)
        and is shared by all choices (right-padded, so no choice attends to another's padding
        under the causal mask)."""
        import torch

        out = []
        with self._lock, torch.no_grad():
            for r in reqs:
                t0 = time.perf_counter()
                ids = self.tokenizer(self._prompt(r.messages) + (r.prefix or ""), add_special_tokens=False)["input_ids"]
                n, cache = self.prefix.lookup(ids) if self.prefix is not None else (0, None)
                first = self.model(input_ids=torch.tensor([ids[n:]], device=self.device), use_cache=True,
                                   **({self._cache_kw: cache} if cache is not None else {}))
                cache = _cache_of(first)
                if self.prefix is not None:
                    self.prefix.store(ids, cache)
                last_logp = torch.log_softmax(first.logits[0, -1].float(), -1)
                choices = list(r.extra["choices"])
                toks = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
                scores = []
                for chunk in _packs(toks, CHOICE_PACK_TOKENS):
                    logp = self._score_packed(cache, len(ids), chunk)
                    at = 0
                    for t in chunk:  # token 0 from the prompt's last position, token n from the choice's position n-1
                        scores.append(float(last_logp[t[0]]) + sum(float(logp[at + n - 1, t[n]]) for n in range(1, len(t))))
                        at += len(t) - 1
                best = _pick(scores, r)
                out.append(ChatResult(text=(r.prefix or "") + choices[best], model=r.model, role=r.role, id=r.id,
                                      finish_reason="stop", prompt_tokens=len(ids), completion_tokens=len(toks[best]),
                                      latency_ms=(time.perf_counter() - t0) * 1000, attempts=1))
        return out

    def _score_packed(self, cache, held: int, chunk: list[list[int]]):
        """Log-probabilities after every position of the choices in ``chunk``, packed into one row
        after the prompt's ``held`` cached positions: each choice's tokens (its last one is never
        scored, so not fed) sit at the positions they would have alone and attend to the prompt
        and to their own earlier tokens only (a block-diagonal causal 4D mask), so one forward pass
        over a batch-1 cache scores them all; copying the prompt's cache into a row per choice
        cost more than the choices' own tokens."""
        import torch

        feed, pos, owner = [], [], []
        for k, t in enumerate(chunk):
            feed += t[:-1]
            pos += range(held, held + len(t) - 1)
            owner += [k] * (len(t) - 1)
        if not feed:
            return None
        q = len(feed)
        own = torch.tensor(owner, device=self.device)
        depth = torch.tensor(pos, device=self.device)
        mine = (own[:, None] == own[None, :]) & (depth[None, :] <= depth[:, None])
        keep = torch.cat([torch.ones(q, held, dtype=torch.bool, device=self.device), mine], 1)[None, None]
        dtype = next(self.model.parameters()).dtype  # an additive mask: what eager and sdpa attention both take
        mask = torch.zeros(keep.shape, dtype=dtype, device=self.device).masked_fill_(~keep, torch.finfo(dtype).min)
        out = self.model(input_ids=torch.tensor([feed], device=self.device), position_ids=depth[None], attention_mask=mask,
                         use_cache=True, **{self._cache_kw: _rows(cache, held, 1)})
        return torch.log_softmax(out.logits[0].float(), -1)

    def generate(self, reqs: Sequence[ChatRequest], batch_size: int = 8, batch_tokens: int | str | None = None) -> list[ChatResult]:
        import torch

        if batch_tokens == "auto":
            batch_tokens = self.auto_batch_tokens
        if any(r.extra.get("choices") for r in reqs):
            pick = [i for i, r in enumerate(reqs) if r.extra.get("choices")]
            free = [i for i, r in enumerate(reqs) if not r.extra.get("choices")]
            out = [None] * len(reqs)
            for idx, res in ((pick, self.choose([reqs[i] for i in pick], batch_size)),
                             (free, self.generate([reqs[i] for i in free], batch_size) if free else [])):
                for i, r in zip(idx, res, strict=True):
                    out[i] = r
            return out  # type: ignore[return-value]
        prompts = [self._prompt(r.messages) + (r.prefix or "") for r in reqs]
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        lengths = [len(e) for e in encoded]
        groups: dict[tuple, list[int]] = defaultdict(list)
        out: list[ChatResult | None] = [None] * len(reqs)
        for i, r in enumerate(reqs):
            if self.context and lengths[i] + r.max_tokens > self.context:  # what an endpoint answers with a 400
                out[i] = ChatResult(None, r.model, r.role, r.id, prompt_tokens=lengths[i], error=(
                    f"context overflow: prompt of {lengths[i]} tokens + max_tokens {r.max_tokens} > {self.context}"))
                continue
            groups[(round(r.temperature, 4), float(r.extra.get("repetition_penalty", 1.0)))].append(i)
        with self._lock, torch.no_grad():
            for (temp, rep), idx in groups.items():
                idx.sort(key=lambda i: lengths[i])
                # what each prompt still costs: a cached prefix is not computed again, so prompts
                # whose docs are cached share a forward pass (and the decode steps) again
                cost = lengths if self.prefix is None else [n - self.prefix.longest(e)[0] for n, e in zip(lengths, encoded, strict=True)]
                for chunk in token_batches(idx, cost, batch_size, batch_tokens):
                    t0 = time.perf_counter()
                    max_new = max(reqs[i].max_tokens for i in chunk)
                    seed = reqs[chunk[0]].seed
                    gen_kwargs = dict(max_new_tokens=max_new, pad_token_id=self.tokenizer.pad_token_id)
                    if rep != 1.0:
                        gen_kwargs["repetition_penalty"] = rep
                    stops = {tuple(reqs[i].stop or ()) for i in chunk}
                    if len(stops) == 1 and next(iter(stops)):
                        gen_kwargs.update(stop_strings=list(next(iter(stops))), tokenizer=self.tokenizer)
                    if temp > 0:
                        gen_kwargs.update(do_sample=True, temperature=temp, top_p=1.0, top_k=0)
                    else:
                        gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                    new = prefix_generate(self.model, [encoded[i] for i in chunk], self.tokenizer.pad_token_id,
                                          self.prefix, self._cache_kw, seed=seed if seed is not None else 0,
                                          static=self.static_cache, **gen_kwargs)
                    dt = (time.perf_counter() - t0) * 1000 / len(chunk)
                    for row, i in zip(new, chunk, strict=True):
                        r = reqs[i]
                        eos = self.tokenizer.eos_token_id
                        toks = row[: r.max_tokens]
                        finish = "length"
                        if eos in toks:
                            toks = toks[: toks.index(eos)]
                            finish = "stop"
                        toks = [t for t in toks if t != self.tokenizer.pad_token_id]
                        text = (r.prefix or "") + self.tokenizer.decode(toks, skip_special_tokens=True)
                        for stop in r.stop or []:
                            at = text.find(stop, len(r.prefix or ""))
                            if at >= 0:
                                text, finish = text[:at], "stop"
                        out[i] = ChatResult(text=text, model=r.model, role=r.role, id=r.id, finish_reason=finish,
                                            prompt_tokens=lengths[i], completion_tokens=len(toks), latency_ms=dt, attempts=1)
        return out  # type: ignore[return-value]


def _cache_of(output):
    return output.cache if getattr(output, "cache", None) is not None else output.past_key_values


def _rows(cache, n: int, batch: int):
    """``batch`` rows of a batch-1 cache's first ``n`` positions, the source untouched."""
    if reusable(cache):
        return fork(cache, n, batch)
    rows = copy.deepcopy(cache)
    rows.batch_repeat_interleave(batch)
    return rows


def prefix_generate(model, contexts: Sequence[Sequence[int]], pad: int, prefix: PrefixCache | None, cache_kw: str,
                    seed: int | None = None, static: bool = False, loop_window: int | None = LOOP_WINDOW,
                    **gen_kwargs) -> list[list[int]]:
    """``model.generate`` over token-id contexts, reusing ``prefix``: each row starts from the KV
    cache of its longest stored prefix and only the rest is computed. Row ``i`` is laid out
    ``[its n_i cached tokens][padding to the longest cached][padding][its uncached suffix]`` with
    every padding position masked; positions come from the attention mask's cumulative sum, so
    every token sits where it would without reuse (with nothing cached this is plain left
    padding). A prefix all contexts share that is not stored yet (a GRPO group's prompt, entries
    with the same docs) is computed once first. After generation every row's sequence is stored
    (its real positions gathered out of the padded batch), so the next step of a conversation
    extends it. With ``static`` the batch decodes into a preallocated transformers ``StaticCache``
    (prompt + max_new_tokens positions, written in place) instead of a ``DynamicCache``, which
    concatenates, i.e. copies the whole cache, at every new token: measured here, that copy is
    half of a decode step at a 4.6k-token prompt. A row stuck in a loop stops early
    (:class:`LoopStop`, ``loop_window``; None: never). Returns the new token ids of each row
    (padding after EOS or a loop stop included)."""
    import torch

    device = next(model.parameters()).device
    contexts = [list(c) for c in contexts]
    rows = len(contexts)
    hits: list[tuple[int, object]] = [(0, None)] * rows
    if prefix is not None:
        shared = min(len(c) for c in contexts) - 1  # every row keeps one token to compute
        for c in contexts[1:]:
            shared = min(shared, common_prefix(contexts[0], c))
        if rows > 1 and shared - prefix.longest(contexts[0][:shared + 1])[0] >= prefix.min_tokens:
            n, base = prefix.lookup(contexts[0][:shared + 1], count=False)  # compute the shared part once, keep it
            ext = model(input_ids=torch.tensor([contexts[0][n:shared]], device=device), use_cache=True,
                        **({cache_kw: base} if base is not None else {}))
            prefix.store(contexts[0][:shared], _cache_of(ext))
        hits = [prefix.lookup(c) for c in contexts]
    held = max(n for n, _ in hits)  # cache positions every row has (its own, then masked padding)
    width = max(len(c) - n for c, (n, _) in zip(contexts, hits, strict=True))
    ids, mask = [], []
    for c, (n, _) in zip(contexts, hits, strict=True):
        gap = (held - n) + (width - (len(c) - n))
        ids.append(c[:n] + [pad] * gap + c[n:])
        mask.append([1] * n + [0] * gap + [1] * (len(c) - n))
    new_tokens = gen_kwargs.get("max_new_tokens") or getattr(gen_kwargs.get("generation_config"), "max_new_tokens", None)
    static = static and new_tokens is not None and _plain_attention(model)
    if static:
        kw = {cache_kw: _static(model, hits, held, rows, held + width + new_tokens)}
    else:
        kw = {cache_kw: _stack(hits, held)} if held else {}
    ids_t, mask_t = torch.tensor(ids, device=device), torch.tensor(mask, device=device)
    loops = None
    if loop_window and "stopping_criteria" not in gen_kwargs:
        from transformers import StoppingCriteriaList

        loops = LoopStop(ids_t.shape[1], loop_window)
        gen_kwargs["stopping_criteria"] = StoppingCriteriaList([loops])
    if seed is not None:
        torch.manual_seed(seed)
    # never auto-compiled: with a static cache on CUDA, transformers would capture the decode step in
    # CUDA graphs and recompile for every new cache length (TRL turns it off for its own generation too)
    res = model.generate(input_ids=ids_t, attention_mask=mask_t, return_dict_in_generate=True, disable_compile=True,
                         **kw, **gen_kwargs)
    seqs = res.sequences
    done = _cache_of(res)
    if prefix is not None and done is not None and (static or reusable(done)):
        filled = int(done.get_seq_length())
        for k in range(rows):  # the row's real positions: its cached prefix, its suffix, what it generated
            keep = [j for j, m in enumerate(mask[k]) if m] + list(range(len(mask[k]), filled))
            whole = not static and rows == 1 and held == hits[k][0]
            prefix.store(seqs[k, keep].tolist(), done if whole else _gather(done, k, keep))
    new = seqs[:, ids_t.shape[1]:].tolist()
    return loops.cut(new) if loops is not None else new


def _stack(hits, held: int):
    """One cache for a batch from each row's own cached prefix (batch 1, ``n_i`` positions),
    zero-filled to ``held`` positions (masked, so never attended)."""
    from transformers.cache_utils import DynamicCache

    if len(hits) == 1:
        return hits[0][1]
    ref = next(c for n, c in hits if n)
    data = []
    for li, layer in enumerate(ref.layers):
        shape = (len(hits), layer.keys.shape[1], held, layer.keys.shape[3])
        k, v = layer.keys.new_zeros(shape), layer.values.new_zeros(shape)
        _fill(k, v, hits, li)
        data.append((k, v))
    return DynamicCache(ddp_cache_data=data)


def _plain_attention(model) -> bool:
    """Every layer full attention (no sliding window, no recurrent state): what :func:`_static`
    lays out."""
    c = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return not getattr(c, "sliding_window", None) and set(getattr(c, "layer_types", None) or ["full_attention"]) == {"full_attention"}


def _static(model, hits, held: int, batch: int, length: int):
    """A ``StaticCache`` of ``length`` positions for ``batch`` rows holding each row's cached
    prefix (``n_i`` positions) at its start, zeros (masked) up to ``held``."""
    from transformers.cache_utils import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=length)
    ref = next((c for n, c in hits if n), None)
    if ref is None:
        return cache  # nothing cached: the prompt fills it
    for li, layer in enumerate(cache.layers):
        src = ref.layers[li]
        shape = (batch, src.keys.shape[1], 0, src.keys.shape[3])
        layer.lazy_initialization(src.keys.new_empty(shape), src.values.new_empty(shape))
        _fill(layer.keys, layer.values, hits, li)
        layer.cumulative_length.fill_(held)
    return cache


def _fill(keys, values, hits, layer: int) -> None:
    """Write each row's cached prefix (layer ``layer`` of its batch-1 cache, ``n_i`` positions) at
    the start of that row of ``keys`` / ``values``; what lies past it stays as it was (zeros)."""
    for row, (n, c) in enumerate(hits):
        if n:
            keys[row, :, :n] = c.layers[layer].keys[0]
            values[row, :, :n] = c.layers[layer].values[0]


def _gather(cache, row: int, positions: list[int]):
    """Row ``row``'s KV at ``positions``, as a batch-1 cache of its own."""
    import torch
    from transformers.cache_utils import DynamicCache

    at = torch.tensor(positions, device=cache.layers[0].keys.device)
    return DynamicCache(ddp_cache_data=[(layer.keys[row:row + 1].index_select(2, at), layer.values[row:row + 1].index_select(2, at))
                                        for layer in cache.layers])


def token_batches(idx: Sequence[int], lengths: Sequence[int], batch_size: int, batch_tokens: int | None) -> list[list[int]]:
    """Split length-sorted requests into forward passes of at most ``batch_size`` requests and, when
    ``batch_tokens`` is set, at most that many padded prompt tokens (rows × longest prompt). On a
    CPU, a batch padded out to a long prompt costs more than the same prompts one by one
    (measured: three τ² prompts of 5k-7.7k tokens, 373 s batched, 163 s one at a time)."""
    out: list[list[int]] = []
    for i in idx:
        cur = out[-1] if out else None
        if cur is None or len(cur) >= batch_size or (batch_tokens and (len(cur) + 1) * max(lengths[i], *(lengths[j] for j in cur)) > batch_tokens):
            out.append([i])
        else:
            cur.append(i)
    return out


def _packs(toks: list[list[int]], budget: int) -> list[list[list[int]]]:
    """Consecutive groups of choices whose fed tokens (all but each one's last) fit ``budget``."""
    out, cur, used = [], [], 0
    for t in toks:
        if cur and used + len(t) - 1 > budget:
            out.append(cur)
            cur, used = [], 0
        cur.append(t)
        used += len(t) - 1
    return out + ([cur] if cur else [])


def _logsumexp(xs: list[float]) -> float:
    top = max(xs)
    return top + math.log(sum(math.exp(x - top) for x in xs))


def _pick(scores: list[float], req: ChatRequest) -> int:
    """The most likely choice at temperature 0; above it a draw from softmax(scores / T), seeded by
    the request (seed, sample, prefix), so K voters or R reviewers sampling the same prompt can
    disagree while a rerun draws the same. With ``extra["groups"]`` (a label per choice) the argmax
    is taken in two steps: the group with the most probability mass, then its best choice. Without
    it one short choice (``)``: close the call) beats each of n longer ones (``, p=``: go on) even
    when going on is n times likelier in total; a draw at T > 0 already has the right marginals."""
    if req.temperature <= 0:
        groups = req.extra.get("groups")
        if groups:  # decide the group by its total probability first: "close" vs "any of n ways to go on"
            mass: dict = {}
            for k, g in enumerate(groups):
                mass.setdefault(g, []).append(scores[k])
            top = max(mass, key=lambda g: _logsumexp(mass[g]))
            return max((k for k, g in enumerate(groups) if g == top), key=lambda k: scores[k])
        return max(range(len(scores)), key=lambda k: scores[k])

    top = max(scores)
    weights = [math.exp((s - top) / req.temperature) for s in scores]
    key = f"{req.seed}:{req.sample}:{req.prefix or ''}:{len(scores)}".encode()
    rng = random.Random(int(hashlib.sha256(key).hexdigest()[:16], 16))
    return rng.choices(range(len(scores)), weights=weights)[0]
