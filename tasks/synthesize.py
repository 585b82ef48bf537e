"""Prefect task ``synthesize``: BFCL seed configs -> synthesis_attempts + synthesized trajectories
(Appendix B). Attempts run in waves (shards), so a killed run resumes at the wave in flight, and
the LLM cache replays that wave's finished calls for free."""

from __future__ import annotations

from prefect import get_run_logger, task

from progra_core import synthesize as core
from progra_core.config import PipelineConfig
from progra_core.datasets import bfcl
from progra_core.ingest import _bfcl_version
from storage import DatasetRef, DatasetStore, fingerprint
from tasks._common import (
    Progress,
    dataset_cache_key,
    flow_run_id,
    funnel_markdown,
    publish_funnel,
    role_kwargs,
    role_payload,
)

ROLES = ("generator", "action", "reviewer")


def synthesize_config(cfg: PipelineConfig) -> dict:
    """What the attempts depend on: the section (less the mix knobs), the three roles, the seed pool."""
    section = {k: v for k, v in cfg.section("synthesize").items() if k not in ("enabled", "mix", "keep_ingested")}
    return {"section": section, "roles": {r: role_payload(cfg, r) for r in ROLES},
            "seed_pool": {"category": "base", "split": "train", "held_out_percent": cfg.ingest.held_out_percent,
                          "bfcl_eval": _bfcl_version()}}


def attempts_fingerprint(cfg: PipelineConfig) -> str:
    return fingerprint(core.ATTEMPTS_STAGE, synthesize_config(cfg), [], core.CODE_VERSION)


def synthesize_fingerprint(cfg: PipelineConfig) -> str:
    return fingerprint(core.STAGE, {}, [attempts_fingerprint(cfg)], core.CODE_VERSION)


def synthesis_funnel(stats: dict, min_turns: int) -> list[tuple[str, int, int, int]]:
    n, ok = stats.get("attempts", 0), stats.get("config_ok", 0)
    rows = [("attempts", n, n, 0), ("initial config valid", n, ok, n - ok)]
    for t, c in (stats.get("turns") or {}).items():
        rows += [(f"turn {t}: query", c["reached"], c["query_ok"], c["reached"] - c["query_ok"]),
                 (f"turn {t}: consensus", c["query_ok"], c["consensus"], c["query_ok"] - c["consensus"]),
                 (f"turn {t}: verified", c["consensus"], c["verified"], c["consensus"] - c["verified"])]
    acc = stats.get("accepted", 0)
    rows.append((f"accepted (>= {min_turns} verified turns)", n, acc, n - acc))
    return rows


@task(name="synthesize", cache_key_fn=dataset_cache_key, persist_result=True, retries=1, retry_delay_seconds=5)
def synthesize(cfg: PipelineConfig, root: str, output_stage: str = core.STAGE, dataset_id: str | None = None) -> DatasetRef:
    from progra_core.llm import Gateway
    from progra_core.sharding import run_sharded
    from storage import ShardIO

    store = DatasetStore(root)
    dataset_id = dataset_id or synthesize_fingerprint(cfg)
    if store.exists(output_stage, dataset_id):
        return store.ref(output_stage, dataset_id)
    sc = cfg.synthesize
    attempts_id = attempts_fingerprint(cfg)
    entries = bfcl.select_entries(["base"], "train", cfg.ingest.held_out_percent)
    specs = core.plan_attempts(sc, entries)
    models = {r: getattr(cfg.models, r) for r in ROLES}
    endpoints = {r: role_kwargs(cfg, r) for r in ROLES}
    gateway = Gateway.from_config(cfg, root)
    shards = ShardIO(store, output_stage, dataset_id)
    try:
        table, shard_stats = run_sharded(
            specs, "attempt_id", sc.concurrency,
            lambda part: core.synthesize_wave(part, gateway, sc, models, endpoints, sc.step_mode),
            shards, Progress("synthesize-progress", len(specs)))
        usage = gateway.usage_summary()
    finally:
        gateway.close()
    trajs, attempts, rejects, stats = core.split_outcomes(table)
    stats = {**stats, **shard_stats, "rows_in": len(specs), "usage": usage}
    config = synthesize_config(cfg)
    if not store.exists(core.ATTEMPTS_STAGE, attempts_id):
        store.write(core.ATTEMPTS_STAGE, attempts, dataset_id=attempts_id, config=config, code_version=core.CODE_VERSION,
                    flow_run_id=flow_run_id(), stats=stats)
    ref = store.write(output_stage, trajs, dataset_id=dataset_id, config=config, parents=[attempts_id],
                      code_version=core.CODE_VERSION, rejects=rejects, flow_run_id=flow_run_id(), stats=stats)
    shards.clear()
    get_run_logger().info("synthesize %s: %d attempts -> %d accepted trajectories; stop reasons %s",
                          ref.dataset_id, len(specs), ref.rows, stats.get("stop_reasons"))
    publish_funnel("synthesis-funnel", funnel_markdown(
        "Synthesis (Appendix B)", synthesis_funnel(stats, sc.min_turns), stats.get("stop_reasons"), usage,
        {"synthesis_attempts": store.ref(core.ATTEMPTS_STAGE, attempts_id).path, "synthesized": ref.path}))
    return ref
