"""Shards of a paid stage as Prefect tasks on the flow's task runner (threads, Dask, Ray)."""

from __future__ import annotations

import pickle

from prefect import task
from prefect.cache_policies import NONE
from prefect.context import FlowRunContext
from prefect.futures import as_completed

from tasks.limits import gateway_for

__all__ = ["in_order", "llm_shard", "shard_mapper"]


@task(name="shard", task_run_name="{stage}-shard-{key}", cache_policy=NONE)
def llm_shard(cfg, root: str, stage: str, key: str, part: list[dict] | bytes, work) -> tuple:
    """One shard on whatever worker the task runner picked: its own gateway (same response cache
    on the shared root; local models are loaded once per process), its rows and the gateway's
    usage records. A retry (``llm.shard_retries``) replays the answers already cached and asks
    only for the requests the endpoint did not answer. ``part`` arrives pickled from the mapper:
    Prefect passes bytes through untouched on every runner, where a list of rows would be walked
    item by item looking for futures (and ``quote`` does not survive Dask and Ray workers)."""
    if isinstance(part, bytes):
        part = pickle.loads(part)  # noqa: S301 - our own mapper's rows, never external input
    gateway = gateway_for(cfg, root)
    try:
        return work(part, gateway), gateway.usage
    finally:
        gateway.close()


def in_order(cfg, model: str | None) -> bool:
    """Whether shards must run one at a time, in key order: a ``local/`` model on the thread runner
    is one backend in this process whose lock serialises generation anyway, and whose prefix
    cache makes a bf16 answer depend on what ran before it (a cached prefix is not recomputed in
    this batch's layout). Run in a race, two runs of the same data kept 62 or 64 of 160 verified
    notes; in key order every run sees the same history."""
    return bool(model) and model.startswith("local/") and cfg.dispatch.task_runner == "thread"


def shard_mapper(cfg, root: str, stage: str, work, usage: list[dict], ordered: bool = False):
    """A ``run_sharded`` mapper: ``llm_shard`` tasks over the flow's task runner, at most
    ``dispatch.max_workers`` submitted at a time (one with ``ordered``, see :func:`in_order`) and
    yielded as they finish. After a shard fails (past its retries) no new shard starts: the ones
    in flight finish and are stored, then the failure is raised. Outside a flow run: one after
    another in this process."""

    def mapper(_process, jobs):
        if FlowRunContext.get() is None:
            for key, part in jobs:
                table, used = llm_shard.fn(cfg, root, stage, key, part, work)
                usage.extend(used)
                yield key, table
            return
        shard = llm_shard.with_options(retries=cfg.llm.shard_retries, retry_delay_seconds=cfg.llm.shard_retry_delay_s)
        pending, inflight, failure = list(jobs), {}, None
        width = 1 if ordered else cfg.dispatch.max_workers
        while pending or inflight:
            while pending and failure is None and len(inflight) < width:
                key, part = pending.pop(0)
                f = shard.submit(cfg, root, stage, key, pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL), work)
                inflight[f.task_run_id] = (key, f)
            if not inflight:
                break
            f = next(as_completed([f for _, f in inflight.values()]))
            key, _ = inflight.pop(f.task_run_id)
            try:
                table, used = f.result()
            except Exception as e:
                failure = failure or e
                continue
            usage.extend(used)
            yield key, table
        if failure is not None:
            raise failure

    return mapper
