"""How the gateway tells failures apart (see ``gateway``'s module docstring): worth retrying now
(transient), the endpoint's fault after all retries (``retryable`` results, :class:`EndpointUnavailable`),
or the request's own (400/413/422: a reject). Messages are made safe to store.

LiteLLM is imported inside the functions that use it: heavy, and only some callers need it."""

from __future__ import annotations

import asyncio

from progra_core.llm.types import ChatResult, load_litellm

__all__ = ["EndpointUnavailable", "is_transient", "item_error", "describe", "redact"]

_TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class EndpointUnavailable(RuntimeError):
    """Some requests of a batch got no answer because of the endpoint (see module docstring)."""

    def __init__(self, failed: list[ChatResult], total: int):
        first = failed[0]
        super().__init__(f"{len(failed)} of {total} requests to {first.model} got no answer from the endpoint "
                         f"(e.g. {first.error}); the {total - len(failed)} answers that arrived are cached, "
                         "so a rerun asks only for these")
        self.failed = failed
        self.total = total

    def __reduce__(self):  # a Dask / Ray worker's failure reaches the flow as itself, not a TypeError
        return type(self), (self.failed, self.total)


def redact(message: str, key: str | None, limit: int = 400) -> str:
    """An error message safe to store: some endpoints quote the API key they were sent."""
    if key and len(key) >= 4:
        message = message.replace(key, "[redacted]")
    return message[:limit]


def describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__}{f' (HTTP {status})' if isinstance(status, int) else ''}: {exc}"


def item_error(exc: BaseException) -> bool:
    """The endpoint refused this request on its merits (400/413/422); it would refuse it again.
    The status decides: LiteLLM raises some 401s as ``BadRequestError``."""
    litellm = load_litellm()

    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status in (400, 413, 422)
    return isinstance(exc, (litellm.BadRequestError, litellm.UnprocessableEntityError))


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: rate limits, server errors, timeouts, dropped connections."""
    litellm = load_litellm()
    import openai

    transient = (
        openai.APIConnectionError,  # the openai SDK's (direct path); LiteLLM's subclass them
        openai.APITimeoutError,
        litellm.RateLimitError,
        litellm.InternalServerError,
        litellm.ServiceUnavailableError,
        litellm.APIConnectionError,
        litellm.Timeout,
        litellm.exceptions.BadGatewayError,
        asyncio.TimeoutError,
        ConnectionError,
    )
    if isinstance(exc, transient):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and status in _TRANSIENT_STATUS
