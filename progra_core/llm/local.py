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
from functools import lru_cache

from progra_core.llm.hf import cache_kwarg, quiet_hf
from progra_core.llm.types import ChatRequest, ChatResult

__all__ = ["LocalBackend", "get_backend", "resolve_dtype", "kv_batch_tokens", "CPU_BATCH_TOKENS"]


#: local/ batches on CPU: padded prompt tokens per forward pass (measured: past ~8k, padding a
#: batch to a long prompt costs more than batching saves)
CPU_BATCH_TOKENS = 8192


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto``: bfloat16 on a CUDA device that supports it (half the memory, the tensor cores),
    float32 elsewhere (CPU bf16 matmuls are slow without AMX)."""
    if dtype != "auto":
        return dtype
    import torch

    return "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"


def kv_batch_tokens(free_bytes: float, layers: int, kv_dim: int, hidden: int, intermediate: int, bytes_per: int,
                    share: float = 0.5) -> int:
    """Padded prompt tokens per forward pass that ``share`` of ``free_bytes`` holds: per token, the
    KV cache of every layer plus one layer's activations. Half the free memory by default: the
    generated tokens' cache and the allocator's fragmentation need the rest."""
    per_token = bytes_per * (2 * layers * kv_dim + 4 * hidden + 2 * intermediate)
    return max(1024, int(share * free_bytes / per_token))


class LocalBackend:
    def __init__(self, path: str, dtype: str = "auto", device: str | None = None, adapter: str | None = None):
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
        The prompt is encoded once and its KV cache shared by all choices (right-padded, so no
        choice attends to another's padding under the causal mask)."""
        import torch

        out = []
        pad = self.tokenizer.pad_token_id
        with self._lock, torch.no_grad():
            for r in reqs:
                t0 = time.perf_counter()
                ids = self.tokenizer(self._prompt(r.messages) + (r.prefix or ""), add_special_tokens=False)["input_ids"]
                first = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True)
                last_logp = torch.log_softmax(first.logits[0, -1].float(), -1)
                choices = list(r.extra["choices"])
                toks = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
                scores = []
                for s in range(0, len(choices), batch_size):
                    chunk = toks[s:s + batch_size]
                    width = max(len(t) for t in chunk)
                    batch = torch.tensor([t + [pad] * (width - len(t)) for t in chunk], device=self.device)
                    cache = copy.deepcopy(first.cache if hasattr(first, "cache") else first.past_key_values)
                    cache.batch_repeat_interleave(len(chunk))
                    logp = torch.log_softmax(self.model(input_ids=batch, use_cache=True, **{self._cache_kw: cache}).logits.float(), -1)
                    for k, t in enumerate(chunk):  # token 0 from the prompt's last position, token n from choice position n-1
                        scores.append(float(last_logp[t[0]]) + sum(float(logp[k, n - 1, t[n]]) for n in range(1, len(t))))
                best = _pick(scores, r)
                out.append(ChatResult(text=(r.prefix or "") + choices[best], model=r.model, role=r.role, id=r.id,
                                      finish_reason="stop", prompt_tokens=len(ids), completion_tokens=len(toks[best]),
                                      latency_ms=(time.perf_counter() - t0) * 1000, attempts=1))
        return out

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
        lengths = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
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
                for chunk in token_batches(idx, lengths, batch_size, batch_tokens):
                    t0 = time.perf_counter()
                    enc = self.tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True,
                                         add_special_tokens=False).to(self.device)
                    max_new = max(reqs[i].max_tokens for i in chunk)
                    seed = reqs[chunk[0]].seed
                    torch.manual_seed(seed if seed is not None else 0)
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
                    seqs = self.model.generate(**enc, **gen_kwargs)
                    new = seqs[:, enc["input_ids"].shape[1]:]
                    dt = (time.perf_counter() - t0) * 1000 / len(chunk)
                    for row, i in zip(new.tolist(), chunk, strict=True):
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


def _pick(scores: list[float], req: ChatRequest) -> int:
    """The most likely choice at temperature 0; above it a draw from softmax(scores / T), seeded by
    the request (seed, sample, prefix), so K voters or R reviewers sampling the same prompt can
    disagree while a rerun draws the same."""
    if req.temperature <= 0:
        return max(range(len(scores)), key=lambda k: scores[k])

    top = max(scores)
    weights = [math.exp((s - top) / req.temperature) for s in scores]
    key = f"{req.seed}:{req.sample}:{req.prefix or ''}:{len(scores)}".encode()
    rng = random.Random(int(hashlib.sha256(key).hexdigest()[:16], 16))
    return rng.choices(range(len(scores)), weights=weights)[0]


@lru_cache(maxsize=4)
def get_backend(path: str, dtype: str = "auto", adapter: str | None = None) -> LocalBackend:
    return LocalBackend(path, dtype=dtype, adapter=adapter)
