"""Flows ``full-pipeline`` (Fig. 2 then Fig. 3 of the paper, then §4.2's evaluation) and
``data-refresh`` (the nightly data flow with a new synthesis seed).

The GPU stages (verify with a local verifier, sft, grpo, evaluate) run where ``dispatch.mode``
says: in this process, or on the ``progra-gpu`` work pool; only dataset ids travel either way.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext

from flows.console import HEADLINE_METRICS
from flows.data import data_flow
from flows.dispatch import dispatch_stage
from flows.task_runners import with_runner
from flows.train import train_flow
from progra_core.config import PipelineConfig, load_config, resolve_config
from storage import Catalog, DatasetRef, DatasetStore
from tasks.artifacts import publish_markdown
from tasks.funnel import rows_in
from tasks.runtime import refresh_catalog

#: The form the Prefect UI shows for ``config``: the embedded profile, every field documented.
DEFAULT_CONFIG = load_config("embedded")


@flow(name="full-pipeline", log_prints=True)
def full_pipeline(config: PipelineConfig = DEFAULT_CONFIG, profile: str | None = None,
                  overrides: list[str] | None = None) -> dict[str, str]:
    """PROGRA end to end for ``config.method``: data -> warm-up SFT -> PAG-RL -> BFCL evaluation.

    Args:
        config: the whole pipeline config (defaults: the embedded profile).
        profile: start from this profile (embedded, paper, tau2: the files in configs/); the fields edited in
            `config` (those that differ from the embedded defaults) are kept on top of it.
        overrides: `key=value` changes on top of both, e.g. `method=wo_pag` or `dispatch.mode=work_pool`.

    Returns ``{name: dataset id}`` for every dataset and model of the run.
    """
    cfg = resolve_config(config, profile, overrides)
    # Fig. 2: D -> segments -> D_raw (awareness) -> D_ver (verify) -> D_aug -> D_sft
    data = with_runner(data_flow, cfg)(cfg)
    # Fig. 3: warm-up SFT on D_sft, then PAG-RL from the warmed-up policy (per the method's recipe)
    models = train_flow(data["sft_examples"], cfg)
    final = models.get("grpo") or models.get("sft")
    # §4.2: the base and the trained policy on held-out BFCL multi-turn
    evals = dispatch_stage(cfg, "evaluate", init=final)
    refs = {**data, **models, **{f"eval {label}": ref for label, ref in evals.items()}}
    title = f"full pipeline ({cfg.method}, dispatch {cfg.dispatch.mode})"
    publish_run_datasets(cfg, refs, title)
    publish_run_summary(cfg, data, models, evals, title)
    refresh_catalog(cfg)
    return {label: ref.dataset_id for label, ref in refs.items()}


@flow(name="data-refresh", log_prints=True)
def data_refresh(profile: str = "embedded", overrides: list[str] | None = None, seed: int | None = None) -> dict[str, str]:
    """The data flow with a new synthesis seed: new synthesized trajectories and new versions of
    every downstream dataset; older versions stay in the store and in the catalog views.

    Args:
        profile: config profile (embedded, paper, tau2: the files in configs/).
        overrides: `key=value` changes on top of the profile.
        seed: synthesis seed; default: the run's scheduled date as YYYYMMDD (a retry of the same
            night reuses it, so nothing is paid twice).
    """
    if seed is None:
        ctx = FlowRunContext.get()
        when = (ctx.flow_run.expected_start_time if ctx and ctx.flow_run else None) or datetime.now(UTC)
        seed = int(when.astimezone(UTC).strftime("%Y%m%d"))
    cfg = load_config(profile, overrides=[*(overrides or []), f"synthesize.seed={seed}"])
    if not cfg.synthesize.enabled:
        get_run_logger().warning("synthesize.enabled is false: a new seed changes nothing, every stage is a cache hit")
    refs = with_runner(data_flow, cfg)(cfg)
    publish_run_datasets(cfg, refs, f"data refresh (synthesis seed {seed})")
    refresh_catalog(cfg)
    return {label: ref.dataset_id for label, ref in refs.items()}


#: the stage runs' artifacts a reader of the parent run wants (the UI lists the latest of each key)
KEY_ARTIFACTS = ("data-funnel", "sft-curves", "sft-model", "grpo-curves", "grpo-model", "eval-table")


def run_summary_markdown(cfg: PipelineConfig, data: dict[str, DatasetRef], models: dict[str, DatasetRef],
                         evals: dict[str, DatasetRef], title: str) -> str:
    """The parent run's page in one artifact: the funnel, the models, Table 1, and links to the
    stage runs' own artifacts (they live on the subflow runs, which the run page collapses)."""
    from progra_core.evaluation import report

    md = [f"# {title}", "", "## Data funnel", "", "| stage | in | out | rejects |", "|---|---:|---:|---:|"]
    for label, r in data.items():
        if label != "funnel":
            md.append(f"| {r.stage} | {rows_in(r)} | {r.rows} | {r.rejects} |")
    if models:
        md += ["", "## Models", "", "| stage | model id | steps | s/step | metrics |", "|---|---|---:|---:|---|"]
        for stage, r in models.items():
            st = r.stats or {}
            keys = HEADLINE_METRICS.get(stage, ())
            md.append(f"| {stage} | `{r.dataset_id}` | {st.get('steps')} | {st.get('seconds_per_step')} | "
                      + ", ".join(f"{k}={st.get(k)}" for k in keys) + " |")
    if evals:
        summary = Catalog(cfg.storage.root, cfg.storage.catalog_path).eval_summary([r.dataset_id for r in evals.values()])
        headers, body = report.table1(summary)
        md += ["", report.to_markdown(headers, body, report.table_title(summary)), "", report.report_note(cfg)]
    md += ["", "## The stage runs' artifacts", "", " · ".join(f"[{k}](/artifacts/key/{k})" for k in KEY_ARTIFACTS)]
    return "\n".join(md)


def publish_run_summary(cfg: PipelineConfig, data: dict[str, DatasetRef], models: dict[str, DatasetRef],
                        evals: dict[str, DatasetRef], title: str) -> None:
    publish_markdown("run-summary", run_summary_markdown(cfg, data, models, evals, title),
                     f"{title}: the funnel, the models, Table 1 and links to the stage runs' artifacts")


def publish_run_datasets(cfg: PipelineConfig, refs: dict[str, DatasetRef], title: str) -> None:
    """The run's datasets as a markdown artifact: ids, rows, rejects and where the files are."""
    store = DatasetStore(cfg.storage.root)
    md = [f"# Datasets of this run: {title}", "", "| name | stage | dataset id | rows | rejects | path |", "|---|---|---|---:|---:|---|"]
    for label, r in refs.items():
        path = store.url(store.dataset_dir(r.stage, r.dataset_id))
        link = f"[{path}](file://{path})" if store.is_local else f"`{path}`"
        md.append(f"| {label} | {r.stage} | `{r.dataset_id}` | {r.rows} | {r.rejects} | {link} |")
    md += ["", f"Query them: `progra sql \"select * from datasets\" --root {store.root_url}`"]
    publish_markdown("run-datasets", "\n".join(md), f"datasets of this run ({title}): ids, rows, rejects and where they are")
