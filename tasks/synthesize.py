"""Prefect task ``synthesize``: seed configs (BFCL train entries, or a plugin env's ``seeds``) -> synthesis_attempts + synthesized trajectories
(Appendix B). Attempts run in waves (shards), so a killed run resumes at the wave in flight, and
the LLM cache replays that wave's finished calls for free."""

from __future__ import annotations

from prefect import get_run_logger, task

from progra_core import stages
from progra_core.config import PipelineConfig
from progra_core.data import synthesize as core
from progra_core.sharding import run_sharded
from progra_core.sources import bfcl
from storage import DatasetRef, DatasetStore, ShardIO, fingerprint
from tasks.artifacts import Progress, funnel_markdown, publish_markdown
from tasks.limits import gateway_for
from tasks.runtime import STAGE_TASK, already_committed, endpoint, flow_run_id
from tasks.stage_tasks import stage_run

STAGE = stages.get("synthesize")


def attempts_fingerprint(cfg: PipelineConfig) -> str:
    return fingerprint(core.ATTEMPTS_STAGE, STAGE.config(cfg), [], STAGE.code_version)


def synthesize_fingerprint(cfg: PipelineConfig) -> str:
    return fingerprint(STAGE.output, STAGE.config(cfg), [attempts_fingerprint(cfg)], STAGE.code_version)


@task(name="synthesize", **STAGE_TASK, retries=1, retry_delay_seconds=5)
def synthesize(cfg: PipelineConfig, root: str, output_stage: str = STAGE.output, dataset_id: str | None = None) -> DatasetRef:
    store = DatasetStore(root)
    dataset_id = dataset_id or synthesize_fingerprint(cfg)
    if store.exists(output_stage, dataset_id):
        already_committed(output_stage, dataset_id)
        return store.ref(output_stage, dataset_id)
    sc = cfg.synthesize
    attempts_id = attempts_fingerprint(cfg)
    entries = (bfcl.select_entries(["base"], "train", cfg.ingest.held_out_percent) if sc.env == "bfcl" else
               [{"id": f"seed-{i}", "involved_classes": [], "initial_config": seed} for i, seed in enumerate(sc.seeds)])
    specs = core.plan_attempts(sc, entries)
    models = {r: getattr(cfg.models, r) for r in core.ROLES}
    endpoints = {r: {"api_base": e.api_base, "api_key_env": e.api_key_env} for r in core.ROLES for e in [endpoint(cfg, r)]}
    gateway = gateway_for(cfg, root)
    shards = ShardIO(store, output_stage, dataset_id)
    try:
        table, shard_stats = run_sharded(
            specs, "attempt_id", sc.concurrency,
            lambda part: core.synthesize_wave(part, gateway, sc, models, endpoints, sc.step_mode),
            shards, Progress("synthesize-progress", len(specs), what="attempts"))
        usage = gateway.usage_summary()
    finally:
        gateway.close()
    trajs, attempts, rejects, stats = core.split_outcomes(table)
    stats = {**stats, **shard_stats, "rows_in": len(specs), "usage": usage}
    config = STAGE.config(cfg)
    if not store.exists(core.ATTEMPTS_STAGE, attempts_id):
        store.write(core.ATTEMPTS_STAGE, attempts, dataset_id=attempts_id, config=config, code_version=STAGE.code_version,
                    flow_run_id=flow_run_id(), stats=stats)
    ref = store.write(output_stage, trajs, dataset_id=dataset_id, config=config, parents=[attempts_id],
                      code_version=STAGE.code_version, rejects=rejects, flow_run_id=flow_run_id(), stats=stats)
    shards.clear()
    get_run_logger().info("synthesize %s: %d attempts -> %d accepted trajectories; stop reasons %s",
                          ref.dataset_id, len(specs), ref.rows, stats.get("stop_reasons"))
    publish_markdown("synthesis-funnel", funnel_markdown(
        STAGE.title, core.funnel_rows(stats, sc.min_turns), stats.get("stop_reasons"), usage,
        {"synthesis_attempts": store.ref(core.ATTEMPTS_STAGE, attempts_id).path, "synthesized": ref.path}),
        "synthesis funnel: attempts -> valid config -> per-turn query, consensus, verification -> accepted")
    return ref


@stage_run("synthesize")
def run(cfg: PipelineConfig, refs: list[DatasetRef], **_) -> dict[str, DatasetRef]:
    """Seed configs -> ``{"synthesized": trajectories}`` (and their attempts beside them)."""
    return {STAGE.output: synthesize(cfg, cfg.storage.root, dataset_id=synthesize_fingerprint(cfg))}
