"""What a task needs from the Prefect run it is in: the flow run id, how stage tasks are declared
(no Prefect result cache: the dataset store is the cache), and the API keys of LLM roles (Prefect
Secret blocks or named environment variables)."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext

from progra_core.config import PipelineConfig
from progra_core.llm.types import Endpoint
from storage import Catalog

__all__ = ["flow_run_id", "refresh_catalog", "STAGE_TASK", "already_committed", "key_env", "endpoint", "check_key", "allowed_keys", "KeyNotAllowed",
           "KEY_ALLOWLIST"]


def flow_run_id() -> str | None:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


def refresh_catalog(cfg: PipelineConfig) -> None:
    """Persist the catalog's views for tools outside this process (``progra sql``, a DuckDB shell)
    once per top-level flow run, at its end: a nested run (a subflow, a stage dispatched to a work
    pool) leaves it to the run it belongs to. Queries inside a run never need it
    (``Catalog.sql`` builds its views in memory)."""
    from prefect.runtime import flow_run

    if FlowRunContext.get() is not None and flow_run.get_parent_flow_run_id():
        return
    Catalog(cfg.storage.root, cfg.storage.catalog_path).refresh()


#: How every stage task is declared: no Prefect cache and no persisted result. The dataset store
#: is the only cache (a task whose dataset id is committed returns that dataset at once); Prefect's
#: own result files would be pickles under the root that a run later unpickles (a crafted file
#: there is code that runs), and they would duplicate what the manifests already say.
STAGE_TASK = {"cache_policy": NO_CACHE, "persist_result": False}


def already_committed(stage: str, dataset_id: str) -> None:
    """Log a cache hit the way a user reads it on the run page."""
    from prefect import get_run_logger

    get_run_logger().info("%s %s is already in the store: cached, nothing recomputed", stage, dataset_id)


#: the worker's allowlist of keys a run may use: comma-separated ``NAME`` (an env var) or
#: ``secret:BLOCK`` (a Prefect Secret block), each optionally ``@host1|host2`` (host or host:port)
KEY_ALLOWLIST = "PROGRA_KEY_ENVS"
#: without the variable: the usual providers' keys, each only to its provider's own endpoint
DEFAULT_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY", "TOGETHERAI_API_KEY",
                "OPENROUTER_API_KEY", "GROQ_API_KEY", "DEEPSEEK_API_KEY")


class KeyNotAllowed(PermissionError):
    """A run asked for a key the worker does not allow, or to send one to a host it is not bound to."""


def allowed_keys() -> dict[str, frozenset[str] | None]:
    """Key label -> the hosts it may be sent to (None: only the provider's own endpoint, i.e. no
    ``api_base``). Read from the worker's environment, never from run parameters."""
    raw = os.environ.get(KEY_ALLOWLIST)
    if raw is None:
        return dict.fromkeys(DEFAULT_KEYS)
    out: dict[str, frozenset[str] | None] = {}
    for item in (x.strip() for x in raw.split(",")):
        if item:
            name, _, hosts = item.partition("@")
            out[name.strip()] = frozenset(h.strip().lower() for h in hosts.split("|") if h.strip()) or None
    return out


def check_key(label: str, api_base: str | None) -> None:
    """Refuse (:class:`KeyNotAllowed`) a key not on the allowlist, or bound elsewhere than ``api_base``."""
    allowed = allowed_keys()
    if label not in allowed:
        raise KeyNotAllowed(f"API key {label!r} is not on this worker's allowlist ({KEY_ALLOWLIST}): the operator adds it "
                            f"there (e.g. {KEY_ALLOWLIST}='{label}@api.example.com'); a run parameter cannot")
    if not api_base:
        return
    hosts = allowed[label]
    url = urlsplit(api_base if "//" in api_base else "//" + api_base)
    host, hostport = (url.hostname or "").lower(), url.netloc.rpartition("@")[2].lower()
    if hosts is None or not ({host, hostport} & hosts):
        raise KeyNotAllowed(f"API key {label!r} may not be sent to {hostport or api_base!r}: this worker binds it to "
                            f"{sorted(hosts) if hosts else 'its provider only'} ({KEY_ALLOWLIST})")


def key_env(env: str | None, secret: str | None, api_base: str | None = None) -> str | None:
    """The env var a request reads its API key from, once the worker's allowlist allows that key
    for ``api_base`` (:func:`check_key`). A Prefect Secret block is loaded into this process's
    environment under a derived name (once per process, on whichever worker runs the shard), so
    the key itself never enters a parameter, a config, a cache key or a dataset."""
    if not secret:
        if env:
            check_key(env, api_base)
        return env
    check_key(f"secret:{secret}", api_base)
    name = "PROGRA_SECRET_" + re.sub(r"\W", "_", secret).upper()
    if not os.environ.get(name):
        os.environ[name] = str(Secret.load(secret).get())
    return name


def endpoint(cfg: PipelineConfig, role: str) -> Endpoint:
    """How ``role`` reaches its model in this process."""
    base = cfg.models.api_base.get(role)
    return Endpoint(getattr(cfg.models, role), base, key_env(cfg.models.api_key_env.get(role), cfg.models.api_key_secret.get(role), base))
