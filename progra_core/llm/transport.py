"""How the gateway's requests reach an endpoint: the process's one event loop, the in-flight
limit per endpoint, the openai SDK's pooled clients for OpenAI-compatible servers, and LiteLLM's
cost map taught the models it does not know. Kept apart from :mod:`progra_core.llm.gateway`, which
owns the batch call, the response cache, retries and accounting.

LiteLLM and openai are imported inside the functions that use them."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from progra_core.llm.types import ChatRequest, load_litellm

__all__ = ["Exhausted", "client", "direct", "endpoint_semaphore", "gateway_loop", "price_unknown"]

_LOOP: tuple[int, asyncio.AbstractEventLoop] | None = None
_LOOP_LOCK = threading.Lock()
_SEMAPHORES: dict[tuple[int, str, int], asyncio.Semaphore] = {}


def gateway_loop() -> asyncio.AbstractEventLoop:
    """One long-lived event loop per process, in a daemon thread, for every gateway (a forked
    child gets its own: the parent's loop thread does not survive the fork)."""
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None or _LOOP[0] != os.getpid() or _LOOP[1].is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="progra-gateway-loop", daemon=True).start()
            _LOOP = (os.getpid(), loop)
        return _LOOP[1]


class Exhausted(Exception):
    """A transient failure with no retries configured (``max_retries=0``)."""


def endpoint_semaphore(req: ChatRequest, concurrency: int) -> asyncio.Semaphore:
    """One in-flight limit per endpoint and event loop, shared by every gateway on it: shard tasks
    running side by side keep ``concurrency`` requests busy between them, never more."""
    key = (id(asyncio.get_running_loop()), req.api_base or req.model, concurrency)
    sem = _SEMAPHORES.get(key)
    if sem is None:
        sem = _SEMAPHORES[key] = asyncio.Semaphore(concurrency)
    return sem


_PRICED: set[str] = set()
#: models registered at zero cost below: their price is unknown, not zero (``gateway.call_cost``)
UNPRICED: set[str] = set()


def price_unknown(model: str) -> None:
    """LiteLLM prices every response from its cost map; for a model the map does not know (a
    self-hosted vLLM or llm-katan name) every lookup fails, and building that failure (an
    exception, a traceback string, a debug record) costs ~2 ms of the gateway's one event loop
    per call. Such a model is registered once at zero cost, so the lookup hits, and remembered
    in :data:`UNPRICED`, so progra's own cost accounting still reports it as unknown; a model
    LiteLLM knows is left alone."""
    if model in _PRICED:
        return
    _PRICED.add(model)
    litellm = load_litellm()

    try:
        litellm.get_model_info(model)
        return
    except Exception:  # noqa: BLE001 - "not mapped" is the case handled here
        pass
    try:
        provider = litellm.get_llm_provider(model)[1]
    except Exception:  # noqa: BLE001 - a model LiteLLM cannot route fails on the call itself, with its reason
        return
    litellm.register_model({model: {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
                                    "litellm_provider": provider, "mode": "chat"}})
    UNPRICED.add(model)


#: providers whose ``api_base`` is an OpenAI-compatible server (vLLM, SGLang, llm-katan, ...)
_OPENAI_COMPATIBLE = ("openai/", "hosted_vllm/")
#: request ``extra`` keys the openai SDK's ``chat.completions.create`` takes as they are
_OPENAI_PARAMS = frozenset({"top_p", "n", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
                            "response_format", "tools", "tool_choice", "parallel_tool_calls", "user", "extra_body"})
_CLIENTS: dict[tuple[int, str, str], Any] = {}


def direct(req: ChatRequest) -> bool:
    """Whether the request goes straight to its OpenAI-compatible server through the openai SDK
    (one pooled client per server and event loop) instead of through LiteLLM. LiteLLM's per-call
    work (provider resolution, parameter mapping, logging objects, cost lookup, callbacks) is
    ~1-3 ms of the gateway's single event loop; a batch of 64 answers arriving together then waits
    ~100 ms to be read, every latency round, which caps throughput at high concurrency. For a
    server that already speaks OpenAI's API there is nothing for LiteLLM to translate. Any other
    provider, or a request carrying LiteLLM-only options (``mock_response``...), goes through LiteLLM."""
    return bool(req.api_base) and req.model.startswith(_OPENAI_COMPATIBLE) and set(req.extra) <= _OPENAI_PARAMS


def client(api_base: str, key: str, timeout_s: float):
    from openai import AsyncOpenAI

    k = (id(asyncio.get_running_loop()), api_base, key)
    c = _CLIENTS.get(k)
    if c is None:
        c = _CLIENTS[k] = AsyncOpenAI(base_url=api_base, api_key=key, max_retries=0, timeout=timeout_s)
    return c
