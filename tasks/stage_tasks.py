"""How every stage runs: one contract, one registry.

A *stage run* takes the config and the stage's input refs (checked against what it declares) and
returns ``{label: DatasetRef}``; :data:`STAGE_RUNS` holds one per stage of :mod:`progra_core.stages`.
The ``table`` and ``sharded`` stages share one Prefect task built from their declaration: the
dataset fingerprint is the cache key, inputs and their ancestors are read from the store, paid
stages run shard by shard (each stored as it finishes, mapped over the flow's task runner), and the
result is committed with its rejects and a funnel artifact. A ``custom`` stage (synthesize, sft,
grpo, evaluate) registers its own run with :func:`stage_run` next to its task."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from prefect import get_run_logger, task

from progra_core import stages
from progra_core.config import PipelineConfig
from progra_core.llm.gateway import summarize_usage
from progra_core.sharding import run_sharded
from storage import DatasetRef, DatasetStore, ShardIO, fingerprint
from tasks.artifacts import Progress, artifact_key, funnel_markdown, publish_markdown
from tasks.limits import ensure_limit
from tasks.runtime import STAGE_TASK, already_committed, endpoint, flow_run_id
from tasks.shards import in_order, shard_mapper

__all__ = ["stage_fingerprint", "ancestor", "commit", "run_data_stage", "TASKS", "STAGE_RUNS", "StageRun", "stage_run",
           "check_inputs"]

#: ``(cfg, input refs, *, init=None, models=None) -> {label: ref}``: how any stage runs.
StageRun = Callable[..., dict[str, DatasetRef]]
STAGE_RUNS: dict[str, StageRun] = {}


def stage_run(name: str) -> Callable[[StageRun], StageRun]:
    """Register ``fn`` as the run of custom stage ``name`` (declared in progra_core.stages)."""
    stages.get(name)

    def register(fn: StageRun) -> StageRun:
        STAGE_RUNS[name] = fn
        return fn
    return register


def check_inputs(name: str, inputs) -> None:
    """``ValueError`` when ``inputs`` (ids or refs) are not what stage ``name`` reads."""
    if (why := stages.get(name).input_error(list(inputs))) is not None:
        raise ValueError(why)


def stage_fingerprint(name: str, cfg: PipelineConfig, parents: list[str], **context) -> str:
    """The id of what stage ``name`` writes from these parents under this config: a hash of exactly
    what its manifest records (``Stage.config``, the parents, the code version)."""
    st = stages.get(name)
    return fingerprint(st.output, st.config(cfg, **context), parents, st.code_version)


def ancestor(store: DatasetStore, ref: DatasetRef, stage: str) -> DatasetRef:
    """Walk first parents from ``ref`` up to the dataset of ``stage`` (lineage, not in-memory objects)."""
    cur, seen = ref, {ref.dataset_id}
    while cur.stage != stage:
        if not cur.parents:
            raise LookupError(f"{ref.stage} {ref.dataset_id} has no {stage} ancestor")
        if cur.parents[0] in seen:  # only a hand-edited manifest can loop: fingerprints chain one way
            raise LookupError(f"the lineage of {ref.stage} {ref.dataset_id} loops at {cur.parents[0]}")
        seen.add(cur.parents[0])
        cur = store.find(cur.parents[0])
    return cur


def commit(store: DatasetStore, st: stages.Stage, table, *, dataset_id: str, config, parents: list[str], rejects: list[dict],
           stats: dict, rows_in: int, usage: dict | None = None, title: str | None = None, key: str | None = None) -> DatasetRef:
    """Write a stage's dataset, log it, and publish its funnel artifact (``key``: its artifact key
    when a run commits the stage more than once, e.g. one evaluation per model: one key each)."""
    if usage:
        stats = {**stats, "usage": usage}
    ref = store.write(st.output, table, dataset_id=dataset_id, config=config, parents=parents, code_version=st.code_version,
                      rejects=rejects, flow_run_id=flow_run_id(), stats=stats)
    get_run_logger().info("%s -> %s %s: %d in, %d rows, %d rejects", st.name, st.output, ref.dataset_id, rows_in, ref.rows,
                          ref.rejects)
    publish_markdown(artifact_key(key or st.name, "funnel"), funnel_markdown(
        title or st.title, [(st.output, rows_in, ref.rows, ref.rejects)], stats.get("rejects_by_reason"), usage,
        {st.output: ref.path}), f"{st.name}: rows in and out, rejects by reason, LLM usage ({st.help})")
    return ref


def _run(name: str, cfg: PipelineConfig, root: str, inputs: list[DatasetRef], output_stage: str, dataset_id: str) -> DatasetRef:
    st = stages.get(name)
    store = DatasetStore(root)
    if store.exists(output_stage, dataset_id):
        already_committed(output_stage, dataset_id)
        return store.ref(output_stage, dataset_id)
    tables = {label: store.read(ref) for label, ref in zip(st.inputs, inputs, strict=True)}
    for label in st.reads:
        tables[label] = store.read(ancestor(store, inputs[0], label))
    usage: list[dict] = []
    if st.kind == "sharded":
        items = st.items(cfg, tables)
        ep = endpoint(cfg, st.role)
        ensure_limit(cfg, ep)
        shards = ShardIO(store, output_stage, dataset_id)
        table, shard_stats = run_sharded(items, st.id_key, st.shard_size(cfg), None, shards,
                                         Progress(f"{name.replace('_', '-')}-progress", len(items)),
                                         mapper=shard_mapper(cfg, root, name, lambda part, gw: st.process(cfg, part, gw, ep), usage,
                                                             ordered=in_order(cfg, ep.model)))
        out, rejects, stats = st.finish(table)
        stats = {**stats, **shard_stats, "rows_in": len(items)}
    else:
        progress = Progress(f"{name.replace('_', '-')}-progress", inputs[0].rows if inputs else 0, what="rows in")
        out, rejects, stats = st.run(cfg, tables, progress)
        progress(progress.total)  # table stages report when they are done
        shards = None
    rows_in = int(stats.get("rows_in", inputs[0].rows if inputs else out.num_rows + len(rejects)))
    stats = {**stats, "rows_in": rows_in}  # the log line, the bar and the funnel count the same rows in
    ref = commit(store, st, out, dataset_id=dataset_id, config=st.config(cfg), parents=[i.dataset_id for i in inputs],
                 rejects=rejects, stats=stats, rows_in=rows_in, usage=summarize_usage(usage) if usage else None)
    if shards is not None:
        shards.clear()
    return ref


#: One Prefect task per table/sharded stage, named for the stage (the run graph shows the paper's steps).
TASKS = {st.name: task(name=st.name, **STAGE_TASK)(_run)
         for st in stages.STAGES if st.kind != "custom"}


def run_data_stage(name: str, cfg: PipelineConfig, *inputs: DatasetRef) -> DatasetRef:
    """Stage ``name`` on these input datasets, as a task of the calling flow (cached by fingerprint)."""
    st = stages.get(name)
    check_inputs(name, inputs)
    dataset_id = stage_fingerprint(name, cfg, [i.dataset_id for i in inputs])
    return TASKS[name](name, cfg, cfg.storage.root, list(inputs), output_stage=st.output, dataset_id=dataset_id)



def _data_run(name: str, cfg: PipelineConfig, refs: list[DatasetRef], **_) -> dict[str, DatasetRef]:
    return {stages.get(name).output: run_data_stage(name, cfg, *refs)}


STAGE_RUNS.update({st.name: partial(_data_run, st.name) for st in stages.STAGES if st.kind != "custom"})
