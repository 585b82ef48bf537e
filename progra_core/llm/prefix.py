"""Prefix reuse for in-process generation: KV caches kept by the token ids they hold.

Every BFCL step re-sends the same ~4k tokens of function docs, a turn's conversation is a prefix
of its next step's, guided decoding asks one question per function or argument name of the same
prompt, and a GRPO group samples G continuations of one prompt. :class:`PrefixCache` keeps the KV
cache of prompts already computed (a bounded LRU over bytes) and hands out the longest stored
prefix of a new prompt, so only the rest is computed. The stored tensors are never written to:
:func:`fork` builds a new transformers ``DynamicCache`` over slices of them (``DynamicLayer.update``
concatenates, it does not write in place).

Why not vLLM's prefix caching or a constrained-decoding library here: vLLM needs a GPU and a second
copy of the weights (it is the GPU path for RL rollouts, ``grpo.use_vllm``); xgrammar and outlines
constrain the token mask, while guided decoding here *scores* a closed set of names (``choose``),
which needs the prompt's KV cache and nothing else. transformers' own prompt reuse (a cache passed
to ``generate``) is what this builds on; it only lacks the lookup and the memory bound.

torch and transformers are imported inside the functions that use them."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PrefixCache", "fork", "common_prefix", "reusable"]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token id sequences (of one type: lists)."""
    a, b = (a, b) if type(a) is type(b) else (list(a), list(b))
    n = min(len(a), len(b))
    if n == 0:
        return 0
    if a[:n] == b[:n]:  # the common case (a prompt extending a stored one), at C speed
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]: bisect on slice equality
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def reusable(cache) -> bool:
    """True for a cache made only of plain (full-attention, dynamic) layers: sliding-window and
    quantised layers keep state that a slice would not carry."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    return type(cache) is DynamicCache and all(type(layer) is DynamicLayer and layer.is_initialized for layer in cache.layers)


def fork(cache, n: int, batch: int = 1):
    """A new ``DynamicCache`` holding the first ``n`` positions of ``cache`` (batch 1) for ``batch``
    rows; the source is left as it was."""
    from transformers.cache_utils import DynamicCache

    data = [(layer.keys[:, :, :n].expand(batch, -1, -1, -1), layer.values[:, :, :n].expand(batch, -1, -1, -1))
            for layer in cache.layers]
    return DynamicCache(ddp_cache_data=data)


def nbytes(cache) -> int:
    return sum(layer.keys.numel() * layer.keys.element_size() * 2 for layer in cache.layers)


@dataclass
class PrefixStats:
    lookups: int = 0
    hits: int = 0
    reused_tokens: int = 0
    prompt_tokens: int = 0
    stored: int = 0
    evicted: int = 0

    @property
    def reuse(self) -> float:
        """Share of prompt tokens that were not computed again."""
        return self.reused_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


class PrefixCache:
    """LRU of (token ids, KV cache of exactly those ids), at most ``max_bytes`` of tensors.

    ``lookup(ids)`` forks the entry sharing the longest prefix with ``ids`` (at least
    ``min_tokens`` of it, and never all of ``ids``: the model must see one token to give the next
    logits). ``store(ids, cache)`` keeps a batch-1 cache; an entry whose ids are a prefix of the new
    one is dropped (the new one answers for it). Thread-safe; the caller owns the model lock."""

    def __init__(self, max_bytes: int, min_tokens: int = 32):
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens
        self._entries: OrderedDict[int, tuple[list[int], object, int]] = OrderedDict()
        self._next = 0
        self._bytes = 0
        self._lock = threading.Lock()
        self.stats = PrefixStats()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def longest(self, ids: Sequence[int]) -> tuple[int, int | None]:
        """(usable length, entry key) of the best stored prefix of ``ids``; (0, None) when none."""
        best, key = 0, None
        with self._lock:
            for k, (held, _, _) in self._entries.items():
                n = min(common_prefix(held, ids), len(ids) - 1)
                if n > best:
                    best, key = n, k
        return (best, key) if best >= self.min_tokens else (0, None)

    def lookup(self, ids: Sequence[int], batch: int = 1, count: bool = True):
        """(n, cache of ids[:n] for ``batch`` rows) or (0, None)."""
        n, key = self.longest(ids)
        with self._lock:
            if count:
                self.stats.lookups += 1
                self.stats.prompt_tokens += len(ids)
            if key is None or key not in self._entries:
                return 0, None
            self._entries.move_to_end(key)
            cache = self._entries[key][1]
            if count:
                self.stats.hits += 1
                self.stats.reused_tokens += n
        return n, fork(cache, n, batch)

    def store(self, ids: Sequence[int], cache) -> bool:
        """Keep ``cache`` (batch 1, exactly ``len(ids)`` positions) for later prompts."""
        if self.max_bytes <= 0 or not reusable(cache) or cache.get_seq_length() != len(ids) or cache.layers[0].keys.shape[0] != 1:
            return False
        size = nbytes(cache)
        if size > self.max_bytes:
            return False
        ids = list(ids)  # lists throughout: a tuple never equals a list slice
        with self._lock:
            for k in [k for k, (held, _, _) in self._entries.items() if len(held) <= len(ids) and ids[:len(held)] == held]:
                self._bytes -= self._entries.pop(k)[2]
            self._entries[self._next] = (ids, cache, size)
            self._next += 1
            self._bytes += size
            self.stats.stored += 1
            while self._bytes > self.max_bytes:
                _, (_, _, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
                self.stats.evicted += 1
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
