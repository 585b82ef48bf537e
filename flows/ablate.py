"""Flow ``ablate``: the paper's Table 2 in small. One data flow, then each method's recipe on the
same data with the same budget (the config's sft and grpo sections), each trained model evaluated
on the same held-out slice, and one table: a row per method.

Methods that share a stage share its output (progra, w/o PAG-RL and progra_tarl train one PAG SFT
adapter; the base model is evaluated once), because every stage is cached by its fingerprint."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.data import data_flow
from flows.dispatch import dispatch_stage
from flows.task_runners import with_runner
from flows.train import train_flow
from progra_core.config import PipelineConfig, resolve_config
from progra_core.evaluation import report
from storage import Catalog
from tasks.artifacts import publish_markdown
from tasks.runtime import refresh_catalog

__all__ = ["ablate", "TABLE2_METHODS"]

#: Table 2's rows that a CPU can afford, plus TARL's judge on top of PROGRA.
TABLE2_METHODS = ("base", "sft", "wo_pag_rl", "mt_grpo", "progra", "progra_tarl")


@flow(name="ablate", log_prints=True)
def ablate(config: PipelineConfig | None = None, profile: str | None = "embedded", overrides: list[str] | None = None,
           methods: list[str] | None = None) -> dict:
    """Train and evaluate ``methods`` (default: base, sft, wo_pag_rl, mt_grpo, progra, progra_tarl)
    on one data flow; returns ``{"headers", "rows", "evals": {method: eval_results id}}``."""
    cfg = resolve_config(config, None if config is not None else profile, overrides)
    data = with_runner(data_flow, cfg)(cfg)
    evals: dict[str, str] = {}
    for method in methods or TABLE2_METHODS:
        if method == "base":
            run = cfg.model_copy(update={"method": "progra"})  # progra's prompt style for the next-call cases
            refs = dispatch_stage(run, "evaluate", models=["base"])
        else:
            run = cfg.model_copy(update={"method": method})
            models = train_flow(data["sft_examples"], run)
            final = models.get("grpo") or models.get("sft")
            refs = dispatch_stage(run, "evaluate", init=final, models=["trained"])
        evals[method] = next(iter(refs.values())).dataset_id
    headers, rows = table2(Catalog(cfg.storage.root), evals)
    md = report.to_markdown(headers, rows, "Mini Table 2: methods on one data flow, one budget") + "\n\n" + report.report_note(cfg)
    publish_markdown("ablation-table", md, "ablation: every method trained on the same data and budget, one evaluation")
    get_run_logger().info("ablation:\n%s", md)
    refresh_catalog(cfg)
    return {"headers": headers, "rows": rows, "evals": evals}


def table2(catalog: Catalog, evals: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    """Table 1's columns with the ablation's method names as rows (one catalog read; each
    method's row is built from its own evaluation only)."""
    summary = catalog.eval_summary(list(evals.values()))
    headers, _ = report.table1(summary)
    out = []
    for method, eval_id in evals.items():
        _, rows = report.table1([r for r in summary if r["eval_id"] == eval_id])
        if rows:
            out.append([method, rows[0][1], *rows[0][2:]])
    return ["Method", "Trained as", *headers[2:]], out
