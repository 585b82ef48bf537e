"""Flow ``evaluate`` (§4.2, a GPU stage): each model under test on the BFCL multi-turn slice, then
Table 1 as a markdown artifact. Takes model ids and names, never weights or data, so a GPU work
pool can run it on its own box; results come back through the catalog."""

from __future__ import annotations

from prefect import flow, get_run_logger

from progra_core.config import PipelineConfig, load_config
from progra_core.evaluation import report
from storage import Catalog, DatasetRef, DatasetStore
from tasks.artifacts import publish_markdown
from tasks.evaluate import evaluate as evaluate_task
from tasks.evaluate import evaluate_fingerprint, resolve_subjects
from tasks.runtime import refresh_catalog
from tasks.stage_tasks import stage_run


@stage_run("evaluate")
def run(cfg: PipelineConfig, refs: list[DatasetRef], *, init: DatasetRef | None = None,
        models: list[str] | None = None) -> dict[str, DatasetRef]:
    """``{model_ref/method: eval_results}`` for ``models`` (``init``: the model ``trained`` names)."""
    return evaluate_models(models, init.dataset_id if init else None, cfg)


def evaluate_models(models: list[str] | None, trained_model_id: str | None, cfg: PipelineConfig) -> dict[str, DatasetRef]:
    """Evaluate ``models`` (default ``evaluate.models``: base and this run's trained model) and
    publish the Table-1 artifact; returns ``{model_ref/method: eval_results ref}``."""
    store = DatasetStore(cfg.storage.root)
    subjects, local = resolve_subjects(cfg, store, trained_model_id, models)
    out: dict[str, DatasetRef] = {}
    for subject, parents in subjects:
        out[f"{subject.model_ref}/{subject.method}"] = evaluate_task(
            cfg, cfg.storage.root, subject, local, parents, dataset_id=evaluate_fingerprint(cfg, subject, parents))
    summary = Catalog(cfg.storage.root, cfg.storage.catalog_path).eval_summary([r.dataset_id for r in out.values()])
    headers, body = report.table1(summary)
    md = report.to_markdown(headers, body, report.table_title(summary)) + "\n\n" + report.report_note(cfg)
    publish_markdown("eval-table", md, "Table 1 of this evaluation: accuracy per model and benchmark category")
    get_run_logger().info("evaluation:\n%s", md)
    return out


@flow(name="evaluate", log_prints=True)
def evaluate(models: list[str] | None = None, trained_model_id: str | None = None, config: PipelineConfig | None = None,
             profile: str = "embedded") -> dict[str, DatasetRef]:
    """Evaluate ``models`` (default ``evaluate.models``: base and this run's trained model) and
    publish the Table-1 artifact; returns ``{model_ref/method: eval_results ref}``."""
    cfg = config or load_config(profile)
    out = evaluate_models(models, trained_model_id, cfg)
    refresh_catalog(cfg)
    return out
