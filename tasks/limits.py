"""One in-flight limit per endpoint for every worker: a Prefect global concurrency limit.

``llm.concurrency`` is enforced per process by the gateway's semaphore, so N workers (Dask or Ray
processes, several `progra` runs, pods of a work pool) would otherwise send N × that many requests
at once. With ``llm.global_limit`` each request also holds one slot of the Prefect global
concurrency limit ``llm-endpoint-<hash of the endpoint>`` (created with ``llm.concurrency`` slots
if missing), on the Prefect server all workers already report to: no extra service to run. A slot
is a lease, so a worker killed mid-request frees it when the lease runs out.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from progra_core.config import PipelineConfig
from progra_core.llm import Gateway
from progra_core.llm.types import LOCAL_PREFIX, Endpoint

__all__ = ["limit_name", "global_endpoint_limit", "ensure_limit", "gateway_for"]

_READY: set[tuple[str, int]] = set()


def limit_name(endpoint: str) -> str:
    """The Prefect limit of one endpoint (its URL or model string), hashed: never a key or a path."""
    return "llm-endpoint-" + hashlib.sha256(endpoint.encode()).hexdigest()[:12]


@asynccontextmanager
async def _slot(endpoint: str, limit: int, lease_s: float) -> AsyncIterator[None]:
    from prefect.client.orchestration import get_client
    from prefect.concurrency.asyncio import concurrency
    from prefect.exceptions import ObjectAlreadyExists

    name = limit_name(endpoint)
    if (name, limit) not in _READY:  # once per process and limit (a flow that ran ensure_limit skips it)
        async with get_client() as client:
            try:
                await client.upsert_global_concurrency_limit_by_name(name, limit)
            except ObjectAlreadyExists:  # another worker created it between read and create
                pass
        _READY.add((name, limit))
    async with concurrency(name, occupy=1, strict=True, lease_duration=lease_s):
        yield


def global_endpoint_limit(cfg: PipelineConfig) -> Callable[[str, int], AbstractAsyncContextManager] | None:
    """The gateway's ``endpoint_limit`` when ``llm.global_limit`` is on, else None."""
    if not cfg.llm.global_limit:
        return None
    lease_s = max(60.0, 2 * cfg.llm.timeout_s)  # outlives one attempt; Prefect renews it meanwhile
    return lambda endpoint, limit: _slot(endpoint, limit, lease_s)


def ensure_limit(cfg: PipelineConfig, ep: Endpoint) -> None:
    """Create (or resize) the endpoint's limit from the flow, before its shards start on workers,
    so workers find it instead of racing to create it. In-process models have no endpoint."""
    if not cfg.llm.global_limit or ep.model.startswith(LOCAL_PREFIX):
        return
    from prefect.client.orchestration import get_client

    name = limit_name(ep.api_base or ep.model)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, cfg.llm.concurrency)
    _READY.add((name, cfg.llm.concurrency))


def gateway_for(cfg: PipelineConfig, root: str) -> Gateway:
    """The gateway a pipeline task uses, built from the config in this one place: the ``llm``
    settings, the storage layout (answers under ``<root>/llm_cache``, shared by every worker on that
    root; models provisioned per machine, under a local root's ``models/``, else ``.progra-local/models``
    or ``PROGRA_MODELS_DIR``), a strict gateway (an endpoint that stays down raises), and the shared
    endpoint limit when ``llm.global_limit`` asks for it."""
    root = str(root or cfg.storage.root)
    local_root = Path(".progra-local") if "://" in root else Path(root)
    models_root = Path(os.environ["PROGRA_MODELS_DIR"]) if os.environ.get("PROGRA_MODELS_DIR") else local_root / "models"
    return Gateway(f"{root.rstrip('/')}/llm_cache" if cfg.llm.cache else None, models_root=models_root, strict=True,
                   endpoint_limit=global_endpoint_limit(cfg), **cfg.llm.model_dump(include=set(Gateway.SETTINGS)))
