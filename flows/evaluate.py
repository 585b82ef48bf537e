"""Flow ``evaluate`` (§4.2, a GPU stage): each model under test on the BFCL multi-turn slice, then
Table 1 as a markdown artifact. Takes model ids and names, never weights or data, so a GPU work
pool can run it on its own box; results come back through the catalog."""

from __future__ import annotations

from prefect import flow, get_run_logger

from progra_core import report
from progra_core.config import PipelineConfig, load_config
from storage import Catalog, DatasetRef, DatasetStore
from tasks._common import publish_funnel
from tasks.evaluate import evaluate as evaluate_task
from tasks.evaluate import evaluate_fingerprint, resolve_subjects


def summary_rows(catalog: Catalog, eval_ids: list[str]) -> list[dict]:
    """``eval_summary`` rows of these evaluation datasets, in the given order."""
    if not eval_ids:
        return []
    marks = ", ".join("?" for _ in eval_ids)
    rows = catalog.sql(f"select * from eval_summary where eval_id in ({marks})", eval_ids).to_pylist()
    order = {e: i for i, e in enumerate(eval_ids)}
    return sorted(rows, key=lambda r: (order[r["eval_id"]], r["category"]))


def report_note(cfg: PipelineConfig) -> str:
    """What the table's numbers are (and are not comparable with)."""
    ev = cfg.evaluate
    parts = []
    if ev.categories:
        parts.append(f"BFCL: {ev.split} split, {ev.limit or 'all'} entries per category. Overall = mean of Base, Miss F., "
                     "Miss P. (as in the paper). Turn acc. = share of user turns that pass BFCL's state and response checks.")
    if ev.tau2_domains:
        local_user = cfg.models.user_simulator.startswith("local/")
        parts.append(f"tau2-bench: {ev.tau2_split} split, {ev.tau2_limit or 'all'} tasks per domain, scored by tau2's evaluator "
                     f"(pass rate over trials); user simulator `{cfg.models.user_simulator}`"
                     + (" (a local model, not the paper's GPT-4o: these tau2 numbers are NOT comparable with the paper's)."
                        if local_user else "."))
    parts.append(f"{ev.trials} trial(s), prompt `{ev.prompt}`.")
    return " ".join(parts)


@flow(name="evaluate", log_prints=True)
def evaluate(models: list[str] | None = None, trained_model_id: str | None = None, config: PipelineConfig | None = None,
             profile: str = "embedded") -> dict[str, DatasetRef]:
    """Evaluate ``models`` (default ``evaluate.models``: base and this run's trained model) and
    publish the Table-1 artifact; returns ``{model_ref/method: eval_results ref}``."""
    cfg = config or load_config(profile)
    store = DatasetStore(cfg.storage.root)
    subjects, local = resolve_subjects(cfg, store, trained_model_id, models)
    out: dict[str, DatasetRef] = {}
    for subject, parents in subjects:
        out[f"{subject.model_ref}/{subject.method}"] = evaluate_task(
            cfg, cfg.storage.root, subject, local, parents, dataset_id=evaluate_fingerprint(cfg, subject, parents))
    catalog = Catalog(cfg.storage.root, cfg.storage.catalog_path)
    catalog.refresh()
    headers, body = report.table1(summary_rows(catalog, [r.dataset_id for r in out.values()]))
    md = report.to_markdown(headers, body, "Accuracy (%): BFCL multi-turn and tau2-bench")
    md += "\n\n" + report_note(cfg)
    publish_funnel("eval-table", md)
    get_run_logger().info("evaluation:\n%s", md)
    return out
