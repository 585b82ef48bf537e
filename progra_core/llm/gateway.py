"""One batch call for every LLM role.

``Gateway.batch(requests)`` answers a list of chat requests with bounded concurrency per
endpoint, a per-request timeout, retries with exponential backoff and full jitter on transport
faults (429/5xx/timeouts/connection errors, via tenacity), a persistent response cache keyed by a
hash of the request payload (so a rerun never pays twice), and per-call token/latency accounting.
Model strings go to LiteLLM, except ``local/<name>``, which runs in-process on transformers with
batched generation behind the same call.

Two kinds of failure are kept apart. A request the endpoint refuses on its merits (400/413/422: too
long, filtered) is the item's outcome and becomes a reject. A failure that is the endpoint's
(retries exhausted on 429/5xx/timeouts, auth, unknown model, a local model that cannot load) is
``ChatResult.retryable``: a ``strict`` gateway (every pipeline stage's) raises
:class:`EndpointUnavailable` for it after the whole batch was tried, so the item is never recorded as
failed data; the answers that did arrive are cached and a rerun asks only for the rest.

LiteLLM is imported inside the functions that use it: heavy, and only some callers need it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from progra_core import versioning
from progra_core.llm import transport
from progra_core.llm.backends import get_backend, release_backends
from progra_core.llm.cache import open_cache
from progra_core.llm.embedded import ensure_embedded_model
from progra_core.llm.errors import EndpointUnavailable, describe, is_transient, item_error, redact
from progra_core.llm.identity import runtime_versions, weights_digest
from progra_core.llm.local import resolve_dtype
from progra_core.llm.types import LOCAL_PREFIX, ChatRequest, ChatResult, entry_problem, load_litellm

__all__ = ["ChatRequest", "ChatResult", "Gateway", "EndpointUnavailable", "is_transient", "LOCAL_PREFIX"]

#: the in-process backend's code (generation, choice scoring, prefix reuse): part of a local answer's key
BACKEND_VERSION = versioning.code_version("1", "progra_core.llm.local")

def call_cost(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """USD one live call cost by LiteLLM's own price map (read offline: ``LITELLM_LOCAL_MODEL_COST_MAP``),
    0 for in-process ``local/`` models (no bill), None for a model the map does not know (an
    endpoint's own name, a self-hosted server): unknown, never counted as free."""
    if model.startswith(LOCAL_PREFIX):
        return 0.0
    if model in transport.UNPRICED:  # registered at zero only to keep LiteLLM's lookups cheap
        return None
    if not prompt_tokens and not completion_tokens:
        return 0.0
    try:
        litellm = load_litellm()

        p, c = litellm.cost_per_token(model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        return float(p) + float(c)
    except Exception:  # litellm raises for a model it has no price for
        return None


def summarize_usage(records: Iterable[dict]) -> dict[str, dict[str, float]]:
    """Per role: calls, cache hits, errors, retries, tokens, mean latency of live calls, and
    their cost in USD (``cost_usd``: the priced calls' sum; ``unpriced_calls``: live calls to
    models without a price, so a non-zero count means the true cost is higher). Cache hits cost
    nothing. Usage records of one or many gateways, e.g. one per shard task."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    prices: dict[tuple, float | None] = {}
    for u in records:
        s = out[u["role"]]
        s["calls"] += 1
        s["cached"] += int(u["cached"])
        s["errors"] += int(u["error"] is not None)
        s["retries"] += max(0, u["attempts"] - 1)
        s["prompt_tokens"] += u["prompt_tokens"]
        s["completion_tokens"] += u["completion_tokens"]
        s["cost_usd"] += 0.0
        s["unpriced_calls"] += 0
        if not u["cached"]:
            s["live_calls"] += 1
            s["latency_ms_total"] += u["latency_ms"]
            key = (u.get("model") or "", u["prompt_tokens"], u["completion_tokens"])
            if key not in prices:
                prices[key] = call_cost(*key)
            if prices[key] is None:
                s["unpriced_calls"] += 1
            else:
                s["cost_usd"] += prices[key]
    for s in out.values():
        s["mean_latency_ms"] = s["latency_ms_total"] / s["live_calls"] if s["live_calls"] else 0.0
    return {k: dict(v) for k, v in out.items()}


class Gateway:
    """Batch chat completions for all roles.

    ``cache_dir``: persistent response cache, a local folder (diskcache, process-safe) or an
    fsspec URL (one object per answer, shared by every worker on that store); ``None`` disables it.
    ``local_models``: optional map of ``local/<name>`` names to a model folder or a (base folder,
    LoRA adapter folder) pair; ``models_root`` is
    where ``local/smollm2`` is provisioned. ``strict``: :meth:`batch` raises
    :class:`EndpointUnavailable` when a request got no answer for the endpoint's sake.
    """

    #: the keyword arguments that carry the same name in the config's ``llm`` section: a builder
    #: passes ``cfg.llm.model_dump(include=SETTINGS)`` instead of copying them one by one
    SETTINGS = ("concurrency", "timeout_s", "max_retries", "backoff_initial_s", "backoff_max_s", "local_batch_size",
                "local_batch_tokens", "local_dtype", "local_prefix_cache_mb", "local_static_cache")

    def __init__(
        self,
        cache_dir: str | os.PathLike | None = None,
        *,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        local_batch_size: int = 8,
        local_batch_tokens: int | str | None = None,
        local_dtype: str = "auto",
        local_prefix_cache_mb: int = 0,
        local_static_cache: bool = False,
        models_root: str | os.PathLike | None = None,
        local_models: dict[str, str | tuple[str, str]] | None = None,
        strict: bool = False,
        endpoint_limit: Callable[[str, int], AbstractAsyncContextManager] | None = None,
    ):
        self.strict = strict
        self.endpoint_limit = endpoint_limit
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.local_batch_size = local_batch_size
        self.local_batch_tokens = local_batch_tokens
        self.local_dtype = local_dtype
        self.local_prefix_cache_mb = local_prefix_cache_mb
        self.local_static_cache = local_static_cache
        self.models_root = models_root
        self.local_models = dict(local_models or {})
        self._cache = None
        if cache_dir is not None:
            self._cache = open_cache(cache_dir)
        self._lock = threading.Lock()
        self.usage: list[dict] = []
        self.requests_sent = 0  # attempts that reached a backend (HTTP or local forward)

    # -- accounting ------------------------------------------------------------------------

    def _account(self, r: ChatResult) -> None:
        with self._lock:
            self.usage.append(
                {k: getattr(r, k) for k in ("role", "model", "prompt_tokens", "completion_tokens", "latency_ms", "attempts", "cached")}
                | {"error": r.error}
            )

    def usage_summary(self) -> dict[str, dict[str, float]]:
        return summarize_usage(self.usage)

    # -- cache -----------------------------------------------------------------------------

    def identity(self, model: str) -> dict | None:
        """What a ``local/`` model is, for its cache keys (None for remote models, whose string and
        ``api_base`` are their identity): content digests of the weights and the adapter, the
        dtype, the versions of the libraries that run it and of the in-process backend's code
        (``llm/local.py`` and what it imports). Raises when the model is missing."""
        if not model.startswith(LOCAL_PREFIX):
            return None
        path, adapter = self.local_spec(model)
        return {"weights": weights_digest(path), "adapter": weights_digest(adapter) if adapter else None,
                "dtype": self.resolved_dtype(), "runtime": runtime_versions(), "backend": BACKEND_VERSION}

    def resolved_dtype(self) -> str:
        """What ``local_dtype`` means on this machine (``auto`` differs between a CPU with AMX, one
        without and a GPU): the key holds that, so an answer computed in one dtype is never served
        as the other's."""
        import torch

        return resolve_dtype(self.local_dtype, "cuda" if torch.cuda.is_available() else "cpu")

    @property
    def cache_rejected(self) -> int:
        """Stored entries that were not answers (torn, foreign, mistyped): each was asked again."""
        return getattr(self._cache, "rejected", 0)

    def cache_key(self, req: ChatRequest) -> str:
        return req.cache_key(self.identity(req.model))

    def _cached(self, req: ChatRequest, key: str | None = None) -> ChatResult | None:
        if self._cache is None:
            return None
        hit = self._cache.get(key or self.cache_key(req))
        if hit is None:
            return None
        problem = entry_problem(hit)
        if problem is not None:  # foreign or wrongly typed: a miss, asked again and stored over
            self._cache.ignore(key or self.cache_key(req), problem)
            return None
        return ChatResult(**{**hit, "role": req.role, "id": req.id, "cached": True, "attempts": 0, "latency_ms": 0.0})

    def _store(self, req: ChatRequest, res: ChatResult, key: str | None = None) -> None:
        if self._cache is not None and res.ok:
            d = asdict(res)
            for k in ("role", "id", "cached", "attempts"):
                d.pop(k)
            self._cache.set(key or self.cache_key(req), d)

    # -- remote (LiteLLM) ------------------------------------------------------------------

    async def _remote(self, req: ChatRequest) -> ChatResult:
        direct = transport.direct(req)
        if not direct:
            litellm = load_litellm()

            litellm.suppress_debug_info = True  # its "Give Feedback" banner on every error
            transport.price_unknown(req.model)
        kwargs: dict[str, Any] = dict(
            model=req.model,
            messages=req.messages,
            temperature=req.temperature,
            max_tokens=req.max_tokens,
            timeout=self.timeout_s,
            num_retries=0,  # retries are ours (tenacity), so they are counted
            **req.extra,
        )
        if req.stop:
            kwargs["stop"] = req.stop
        if req.seed is not None:
            kwargs["seed"] = req.seed
        if req.api_base:
            kwargs["api_base"] = req.api_base
        key = os.environ.get(req.api_key_env) if req.api_key_env else None
        if key:
            kwargs["api_key"] = key
        elif req.api_base:
            kwargs["api_key"] = "EMPTY"  # OpenAI-compatible servers (vLLM, llm-katan) accept any key
        if direct:
            client = transport.client(req.api_base, kwargs.pop("api_key"), self.timeout_s)
            for k in ("api_base", "num_retries", "timeout"):
                kwargs.pop(k, None)
            kwargs["model"] = req.model.split("/", 1)[1]
            send = lambda: client.chat.completions.create(**kwargs)  # noqa: E731
        else:
            send = lambda: litellm.acompletion(**kwargs)  # noqa: E731
        attempts = 0
        t0 = time.perf_counter()

        async def once():
            nonlocal attempts
            attempts += 1
            async with transport.endpoint_semaphore(req, self.concurrency):
                shared = self.endpoint_limit(req.api_base or req.model, self.concurrency) if self.endpoint_limit else None
                async with shared or contextlib.nullcontext():  # the limit every worker shares, if any
                    with self._lock:
                        self.requests_sent += 1
                    async with asyncio.timeout(self.timeout_s + 5):  # the client's own timeout is the first line
                        return await send()

        try:
            try:  # the common case, one attempt, builds none of the retry machinery on the event loop
                resp, first = await once(), None
            except Exception as exc:
                if not is_transient(exc):
                    raise
                resp, first = None, exc
            if first is not None:
                if self.max_retries == 0:
                    raise transport.Exhausted(first)
                # the rest as tenacity would have run them from the first attempt: waits drawn
                # from [0, min(max, initial * 2^(k-1))] after failure k
                await asyncio.sleep(random.uniform(0, min(self.backoff_max_s, self.backoff_initial_s)))
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self.max_retries),
                    wait=wait_random_exponential(multiplier=2 * self.backoff_initial_s, max=self.backoff_max_s),
                    retry=retry_if_exception(is_transient),
                    reraise=False,
                ):
                    with attempt:
                        resp = await once()
        except (RetryError, transport.Exhausted) as e:
            exc = e.last_attempt.exception() if isinstance(e, RetryError) else e.args[0]
            return ChatResult(None, req.model, req.role, req.id, error=redact(f"retries exhausted: {describe(exc)}", key),
                              attempts=attempts, latency_ms=(time.perf_counter() - t0) * 1000, retryable=True)
        except Exception as exc:  # not transient: report, do not retry
            return ChatResult(None, req.model, req.role, req.id, error=redact(describe(exc), key),
                              attempts=attempts, latency_ms=(time.perf_counter() - t0) * 1000, retryable=not item_error(exc))
        choice = resp.choices[0]
        usage = getattr(resp, "usage", None)
        return ChatResult(
            text=choice.message.content or "",
            model=req.model,
            role=req.role,
            id=req.id,
            finish_reason=getattr(choice, "finish_reason", None),
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            latency_ms=(time.perf_counter() - t0) * 1000,
            attempts=attempts,
        )

    # -- local -----------------------------------------------------------------------------

    def local_path(self, model: str) -> str:
        """Folder of a ``local/<name>`` model: the embedded model, a registered name, or a path."""
        return self.local_spec(model)[0]

    def local_spec(self, model: str) -> tuple[str, str | None]:
        """(model folder, LoRA adapter folder or None) of a ``local/<name>`` model."""
        name = model[len(LOCAL_PREFIX):]
        spec = self.local_models.get(name)
        if isinstance(spec, (tuple, list)):
            return str(spec[0]), (str(spec[1]) if spec[1] else None)
        return (spec if spec is not None else self._resolve_local(name)), None

    def _resolve_local(self, name: str) -> str:
        if name in ("smollm2", "smollm2-135m-instruct"):
            return str(ensure_embedded_model(self.models_root or ".progra/models"))
        for cand in (Path(name), Path(self.models_root or ".") / name):
            if (cand / "config.json").exists() or (cand / "adapter_config.json").exists():
                return str(cand)
        raise ValueError(f"unknown local model local/{name}: not the embedded 'smollm2', a registered name, or a model folder")

    async def _local(self, reqs: list[ChatRequest]) -> list[ChatResult]:
        by_model: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(reqs):
            by_model[r.model].append(i)
        out: list[ChatResult | None] = [None] * len(reqs)
        for model, idx in by_model.items():
            try:
                path, adapter = self.local_spec(model)
                backend = get_backend(path, dtype=self.local_dtype, adapter=adapter,
                                      prefix_cache_mb=self.local_prefix_cache_mb, static_cache=self.local_static_cache,
                                      holder=self)
                results = await asyncio.to_thread(backend.generate, [reqs[i] for i in idx], self.local_batch_size,
                                                  self.local_batch_tokens)
                with self._lock:
                    self.requests_sent += len(idx)
            except Exception as exc:  # model missing or failed: every request of it reports why
                results = [ChatResult(None, model, reqs[i].role, reqs[i].id, error=f"{type(exc).__name__}: {exc}", retryable=True)
                           for i in idx]
            for i, r in zip(idx, results, strict=True):
                out[i] = r
        return out  # type: ignore[return-value]

    # -- the batch call --------------------------------------------------------------------

    async def abatch(self, requests: Sequence[ChatRequest], on_result: Callable[[int, ChatResult], None] | None = None) -> list[ChatResult]:
        """Answer every request; results come back in request order. Failures are results with
        ``error`` set, never exceptions. ``on_result(i, result)`` is called as each finishes."""
        results: list[ChatResult | None] = [None] * len(requests)

        def done(i: int, r: ChatResult) -> None:
            results[i] = r
            self._account(r)
            if on_result is not None:
                on_result(i, r)

        # the cache (keys are JSON + sha256 of each request; diskcache is SQLite) is read and
        # written in worker threads, so the event loop only sends and receives, as a bare client's does
        keys: list[str | None] = [None] * len(requests)
        unknown: dict[str, str] = {}  # local models whose identity cannot be taken: why
        if self._cache is not None:
            keys = await asyncio.to_thread(self._keys, requests, unknown)
        hits = await asyncio.to_thread(lambda: [self._cached(r, k) if k else None for r, k in zip(requests, keys, strict=True)])
        local_idx, remote_idx = [], []
        for i, req in enumerate(requests):
            if req.model in unknown:  # as a model that cannot load: the endpoint's failure, not the item's
                done(i, ChatResult(None, req.model, req.role, req.id, error=unknown[req.model], retryable=True))
            elif hits[i] is not None:
                done(i, hits[i])
            elif req.model.startswith(LOCAL_PREFIX):
                local_idx.append(i)
            else:
                remote_idx.append(i)

        async def one(i: int) -> None:
            r = await self._remote(requests[i])
            if self._cache is not None and r.ok:
                await asyncio.to_thread(self._store, requests[i], r, keys[i])
            done(i, r)

        async def local() -> None:
            if not local_idx:
                return
            # chunks keep the progress callback moving and the cache filling during long runs
            step = max(self.local_batch_size * 4, 1)
            for s in range(0, len(local_idx), step):
                chunk = local_idx[s:s + step]
                rs = await self._local([requests[i] for i in chunk])
                for i, r in zip(chunk, rs, strict=True):
                    self._store(requests[i], r, keys[i])
                    done(i, r)

        await asyncio.gather(local(), *(one(i) for i in remote_idx))
        return results  # type: ignore[return-value]

    def _keys(self, requests: Sequence[ChatRequest], unknown: dict[str, str]) -> list[str | None]:
        """Cache keys, one identity per distinct model of the batch."""
        ids: dict[str, dict | None] = {}
        for m in {r.model for r in requests}:
            try:
                ids[m] = self.identity(m)
            except Exception as exc:
                unknown[m] = f"{type(exc).__name__}: {exc}"
        return [r.cache_key(ids[r.model]) if r.model in ids else None for r in requests]

    def batch(self, requests: Sequence[ChatRequest], on_result: Callable[[int, ChatResult], None] | None = None) -> list[ChatResult]:
        """Synchronous :meth:`abatch`, run on the process's one gateway event loop. Callers in
        several threads (shard tasks on a thread-pool task runner) share that loop, and with it
        LiteLLM's loop-bound HTTP clients and logging worker and the per-endpoint in-flight limit;
        a loop per call would break all three. A strict gateway raises :class:`EndpointUnavailable`
        once every request was tried if any got no answer for the endpoint's sake."""
        results = asyncio.run_coroutine_threadsafe(self.abatch(requests, on_result), transport.gateway_loop()).result()
        if self.strict:
            failed = [r for r in results if r.retryable]
            if failed:
                raise EndpointUnavailable(failed, len(results))
        return results

    def close(self, unload_models: bool = False) -> None:
        """Close the answer cache and let go of the local models this gateway used; with
        ``unload_models``, unload those no other open gateway uses (evaluation, between models).
        Without, they stay loaded for the process's next gateway (a stage's next shard)."""
        release_backends(self, unload=unload_models)
        if self._cache is not None:
            self._cache.close()
