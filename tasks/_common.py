"""What every stage task shares: the dataset-fingerprint cache key, progress, and the funnel
artifact. Tasks stay thin: the work is one call into ``progra_core``."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NONE
from prefect.context import FlowRunContext, TaskRunContext

from storage import DatasetStore

__all__ = ["dataset_cache_key", "Progress", "funnel_markdown", "publish_funnel", "flow_run_id"]


def dataset_cache_key(context: TaskRunContext, parameters: dict) -> str | None:
    """Prefect cache key = the output dataset's fingerprint, but only while that dataset exists:
    if someone deleted it, the task runs again instead of returning a dangling reference."""
    root, stage, dataset_id = parameters.get("root"), parameters.get("output_stage"), parameters.get("dataset_id")
    if not (root and stage and dataset_id):
        return None
    return f"progra-{stage}-{dataset_id}" if DatasetStore(root).exists(stage, dataset_id) else None


def flow_run_id() -> str | None:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


class Progress:
    """A Prefect progress artifact plus log lines every ``every`` percent."""

    def __init__(self, key: str, total: int = 0, every: int = 10):
        self.total = max(total, 1)
        self.every = every
        self._last = -every
        self.id = None
        try:
            self.id = create_progress_artifact(progress=0.0, key=key, description=f"{key}: 0/{total}")
        except Exception:  # outside a run (plain function call): logging only
            self.id = None

    def __call__(self, done: int, total: int | None = None) -> None:
        if total:
            self.total = max(total, 1)
        pct = 100.0 * min(done, self.total) / self.total
        if pct - self._last >= self.every or done >= self.total:
            self._last = pct
            if self.id is not None:
                update_progress_artifact(self.id, progress=pct)
            try:
                get_run_logger().info("progress %.0f%% (%d/%d)", pct, done, self.total)
            except Exception:
                pass


def funnel_markdown(title: str, rows: list[tuple[str, int, int, int]], rejects: dict[str, int] | None = None,
                    usage: dict | None = None, links: dict[str, str] | None = None) -> str:
    """A markdown funnel: (stage, rows in, rows out, rejects) per line, rejects by reason, LLM usage."""
    md = [f"# {title}", "", "| stage | in | out | rejects |", "|---|---:|---:|---:|"]
    md += [f"| {s} | {i} | {o} | {r} |" for s, i, o, r in rows]
    if rejects:
        md += ["", "## Rejects by reason", "", "| reason | count |", "|---|---:|"]
        md += [f"| {k} | {v} |" for k, v in sorted(rejects.items(), key=lambda kv: -kv[1])]
    if usage:
        md += ["", "## LLM usage by role", "", "| role | calls | cached | errors | retries | prompt tok | completion tok | mean latency ms |",
               "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for role, u in usage.items():
            md.append(f"| {role} | {u['calls']:.0f} | {u['cached']:.0f} | {u['errors']:.0f} | {u['retries']:.0f} | "
                      f"{u['prompt_tokens']:.0f} | {u['completion_tokens']:.0f} | {u['mean_latency_ms']:.0f} |")
    if links:
        md += ["", "## Datasets", ""] + [f"- **{k}**: `{v}`" for k, v in links.items()]
    return "\n".join(md)


def publish_funnel(key: str, markdown: str) -> None:
    try:
        create_markdown_artifact(markdown=markdown, key=key, description="progra stage funnel")
    except Exception as e:  # artifacts are a courtesy; never fail a stage for one
        try:
            get_run_logger().warning("could not publish artifact %s: %s", key, e)
        except Exception:
            pass


# -- stage plumbing shared by every dataset-producing task -----------------------------------

def role_payload(cfg, role: str) -> dict:
    """What of the model config a role-driven stage depends on (never the key itself)."""
    return {"model": getattr(cfg.models, role), "api_base": cfg.models.api_base.get(role)}


def key_env(env: str | None, secret: str | None) -> str | None:
    """The env var a request reads its API key from. A Prefect Secret block is loaded into this
    process's environment under a derived name (once per process, on whichever worker runs the
    shard), so the key itself never enters a parameter, a config, a cache key or a dataset."""
    if not secret:
        return env
    import os
    import re

    from prefect.blocks.system import Secret

    name = "PROGRA_SECRET_" + re.sub(r"\W", "_", secret).upper()
    if not os.environ.get(name):
        os.environ[name] = str(Secret.load(secret).get())
    return name


def role_kwargs(cfg, role: str) -> dict:
    return {"api_base": cfg.models.api_base.get(role),
            "api_key_env": key_env(cfg.models.api_key_env.get(role), cfg.models.api_key_secret.get(role))}


def ancestor(store: DatasetStore, ref, stage: str):
    """Walk first parents from ``ref`` up to the dataset of ``stage`` (lineage, not in-memory objects)."""
    cur = ref
    while cur.stage != stage:
        if not cur.parents:
            raise LookupError(f"{ref.stage} {ref.dataset_id} has no {stage} ancestor")
        cur = store.find(cur.parents[0])
    return cur


def commit(store: DatasetStore, stage: str, table, *, dataset_id: str, config: dict, parents: list[str], code_version: str,
           rejects: list[dict], stats: dict, title: str, rows_in: int, usage: dict | None = None):
    """Write the dataset, log it, and publish the stage's funnel artifact."""
    if usage:
        stats = {**stats, "usage": usage}
    ref = store.write(stage, table, dataset_id=dataset_id, config=config, parents=parents, code_version=code_version,
                      rejects=rejects, flow_run_id=flow_run_id(), stats=stats)
    get_run_logger().info("%s %s: %d in -> %d rows, %d rejects", stage, ref.dataset_id, rows_in, ref.rows, ref.rejects)
    publish_funnel(f"{stage.replace('_', '-')}-funnel", funnel_markdown(
        title, [(stage, rows_in, ref.rows, ref.rejects)], stats.get("rejects_by_reason"), usage, {stage: ref.path}))
    return ref


@task(name="shard", task_run_name="{stage}-shard-{key}", cache_policy=NONE)
def llm_shard(cfg, root: str, stage: str, key: str, part: list[dict], work) -> tuple:
    """One shard of a paid stage on whatever worker the task runner picked: its own gateway (same
    response cache on the shared root; local models are loaded once per process), its rows and the
    gateway's usage records. A retry (``llm.shard_retries``) replays the answers already cached and
    asks only for the requests the endpoint did not answer."""
    from progra_core.llm import Gateway

    gateway = Gateway.from_config(cfg, root)
    try:
        return work(part, gateway), gateway.usage
    finally:
        gateway.close()


def shard_mapper(cfg, root: str, stage: str, work, usage: list[dict]):
    """A ``run_sharded`` mapper: ``llm_shard`` tasks over the flow's task runner, at most
    ``dispatch.max_workers`` submitted at a time and yielded as they finish. After a shard fails
    (past its retries) no new shard starts: the ones in flight finish and are stored, then the
    failure is raised. Outside a flow run: one after another in this process."""
    from prefect.futures import as_completed

    def mapper(_process, jobs):
        if FlowRunContext.get() is None:
            for key, part in jobs:
                table, used = llm_shard.fn(cfg, root, stage, key, part, work)
                usage.extend(used)
                yield key, table
            return
        shard = llm_shard.with_options(retries=cfg.llm.shard_retries, retry_delay_seconds=cfg.llm.shard_retry_delay_s)
        pending, inflight, failure = list(jobs), {}, None
        while pending or inflight:
            while pending and failure is None and len(inflight) < cfg.dispatch.max_workers:
                key, part = pending.pop(0)
                f = shard.submit(cfg, root, stage, key, part, work)
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


def run_llm_stage(cfg, root: str, store: DatasetStore, output_stage: str, dataset_id: str, items: list[dict], id_key: str,
                  shard_size: int, process, split, *, config: dict, parent, code_version: str, title: str):
    """The body every paid (LLM) stage shares: shards mapped as ``llm_shard`` tasks over the flow's
    task runner (each stored the moment it finishes), then the rows/rejects split, the commit, and
    removal of the finished shards.

    ``process(part, gateway) -> Table`` handles one shard; ``split(table) -> (rows, rejects, stats)``."""
    from progra_core.llm.gateway import summarize_usage
    from progra_core.sharding import run_sharded
    from storage import ShardIO

    shards = ShardIO(store, output_stage, dataset_id)
    usage: list[dict] = []
    table, shard_stats = run_sharded(items, id_key, shard_size, None, shards, Progress(f"{output_stage}-progress", len(items)),
                                     mapper=shard_mapper(cfg, root, output_stage, process, usage))
    out, rejects, stats = split(table)
    ref = commit(store, output_stage, out, dataset_id=dataset_id, config=config, parents=[parent.dataset_id],
                 code_version=code_version, rejects=rejects, stats={**stats, **shard_stats, "rows_in": len(items)},
                 title=title, rows_in=len(items), usage=summarize_usage(usage))
    shards.clear()
    return ref


# -- training stages -------------------------------------------------------------------------

def policy_path(cfg, root: str) -> str:
    """The base policy as a local folder: ``local/<name>`` via the gateway's resolver (the
    embedded model is converted on first use), anything else as given (an HF id or a path)."""
    from progra_core.llm import Gateway

    model = cfg.models.policy
    if model.startswith("local/"):
        return Gateway.from_config(cfg, root).local_path(model)
    return model


def publish_curves(key: str, png_path, title: str) -> None:
    """The PNG as a Prefect image artifact (a data URL: the server needs no file access)."""
    import base64

    try:
        from prefect.artifacts import create_image_artifact

        data = base64.b64encode(open(png_path, "rb").read()).decode()
        create_image_artifact(image_url=f"data:image/png;base64,{data}", key=key, description=title)
    except Exception as e:  # a courtesy, never a failure
        try:
            get_run_logger().warning("could not publish image artifact %s: %s", key, e)
        except Exception:
            pass


def register_model(store: DatasetStore, stage: str, model_id: str, out_dir, *, base: str, method: str, parents: list[str],
                   config: dict, code_version: str, metrics: dict, rejects: list[dict] | None = None):
    """Put the adapter under ``<root>/models/<stage>/<model_id>``, write its ``train_log`` rows
    and its ``models`` row (dataset id = model id), publish the summary; returns the models ref."""
    import json
    from datetime import UTC, datetime

    import pyarrow as pa

    from progra_core.curves import log_rows
    from progra_core.schemas import MODELS, TRAIN_LOG
    from storage import fingerprint

    history = metrics.pop("log_history", [])
    adapter = store.put_model(out_dir, stage, model_id)
    store.write("train_log", pa.Table.from_pylist(log_rows(model_id, stage, history), schema=TRAIN_LOG),
                dataset_id=fingerprint("train_log", {}, [model_id]), parents=[model_id], flow_run_id=flow_run_id())
    row = {"model_id": model_id, "base": base, "adapter_path": adapter, "method": method, "stage": stage,
           "parents": parents, "metrics": json.dumps(metrics, default=str), "config": json.dumps(config, default=str),
           "created_at": datetime.now(UTC)}
    ref = store.write("models", pa.Table.from_pylist([row], schema=MODELS), dataset_id=model_id, config=config,
                      parents=parents, code_version=code_version, rejects=rejects, flow_run_id=flow_run_id(), stats=metrics)
    md = [f"# {stage}: {method}", "", f"adapter: `{adapter}`", "", "| metric | value |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in metrics.items() if not isinstance(v, (dict, list))]
    publish_funnel(f"{stage}-model", "\n".join(md))
    get_run_logger().info("%s model %s -> %s (%s)", stage, model_id, adapter, {k: v for k, v in metrics.items()
                                                                               if k in ("steps", "seconds_per_step")})
    return ref
