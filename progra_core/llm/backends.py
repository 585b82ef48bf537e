"""Loaded ``local/`` models of this process: each loaded once and shared by the gateways that use
it, unloaded when the last one closes asking for it (evaluation, between models under test), and
a few nobody holds kept for the next gateway (a stage's next shard). Split from ``local.py``,
which runs a model; this module decides how long one stays in memory."""

from __future__ import annotations

import threading

from progra_core.llm.local import LocalBackend

__all__ = ["get_backend", "release_backends", "drop_idle_backends", "loaded_backends", "clear_backends", "IDLE_BACKENDS"]


#: loaded backends nobody holds that stay loaded for a later gateway (as the former lru_cache(4))
IDLE_BACKENDS = 4
#: loaded backends by (path, dtype, adapter, prefix MiB, static) -> the backend and who holds it
_BACKENDS: dict[tuple, tuple[LocalBackend, set[int]]] = {}
_BACKENDS_LOCK = threading.Lock()


def get_backend(path: str, dtype: str = "auto", adapter: str | None = None, prefix_cache_mb: int = 0,
                static_cache: bool = False, holder: object | None = None) -> LocalBackend:
    """The loaded backend for this model, loaded once per process. ``holder`` (a gateway) marks it
    in use until :func:`release_backends` (``Gateway.close``); a gateway closed with
    ``unload_models`` unloads what only it used: evaluation's base model is dropped before the
    trained one loads, instead of sitting in memory with its prefix cache for the rest of the
    process, while a user simulator another open gateway still talks to stays shared."""
    key = (path, dtype, adapter, prefix_cache_mb, static_cache)
    with _BACKENDS_LOCK:  # loads are serialized, so two threads never load the same model twice
        if key not in _BACKENDS:
            idle = [k for k, (_, holders) in _BACKENDS.items() if not holders]
            for k in idle[:max(0, len(idle) - IDLE_BACKENDS + 1)]:  # the oldest unused ones make room
                del _BACKENDS[k]
            _BACKENDS[key] = (LocalBackend(path, dtype=dtype, adapter=adapter, prefix_cache_mb=prefix_cache_mb,
                                           static_cache=static_cache), set())
        backend, holders = _BACKENDS[key]
        if holder is not None:
            holders.add(id(holder))
    return backend


def release_backends(holder: object, unload: bool = False) -> int:
    """``holder`` lets go of every backend it held. With ``unload``, those it held that nobody else
    holds are unloaded (and, on a GPU, their memory returned); without, they stay loaded for the
    next user in this process (a stage's shards, one after another). Returns how many were unloaded."""
    with _BACKENDS_LOCK:
        gone = [k for k, (_, holders) in _BACKENDS.items() if unload and holders == {id(holder)}]
        for _, holders in _BACKENDS.values():
            holders.discard(id(holder))
        for k in gone:
            del _BACKENDS[k]
    if gone:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return len(gone)


def drop_idle_backends() -> int:
    """Unload every backend no gateway holds (the data stages' generator and verifier with their
    prefix caches, up to 2 GiB each) before work that needs the memory more: a training job.
    Returns how many were unloaded."""
    with _BACKENDS_LOCK:
        idle = [k for k, (_, holders) in _BACKENDS.items() if not holders]
        for k in idle:
            del _BACKENDS[k]
    return len(idle)


def loaded_backends() -> int:
    """How many local backends this process holds loaded."""
    return len(_BACKENDS)


def clear_backends() -> None:
    """Unload every backend (tests)."""
    with _BACKENDS_LOCK:
        _BACKENDS.clear()
