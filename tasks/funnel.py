"""Prefect task ``funnel``: the run's stage funnel as a dataset (``funnel`` view) and an artifact."""

from __future__ import annotations

import json

import pyarrow as pa
from prefect import task

from progra_core.schemas import FUNNEL
from storage import DatasetRef, DatasetStore, fingerprint
from tasks.artifacts import funnel_markdown, publish_markdown


@task(name="funnel", persist_result=False)
def rows_in(ref: DatasetRef) -> int:
    """A stage's rows in as it recorded them (older datasets: rows out + rejects)."""
    return int((ref.stats or {}).get("rows_in", ref.rows + ref.rejects))


def funnel(root: str, refs: list[DatasetRef], title: str = "Data pipeline funnel") -> DatasetRef:
    store = DatasetStore(root)
    pid = fingerprint("funnel", {}, [r.dataset_id for r in refs], "2")  # 2: cost columns
    rows, md_rows, reasons, usage = [], [], {}, {}
    for i, r in enumerate(refs):
        st = r.stats or {}
        u = st.get("usage") or {}
        n_in = rows_in(r)
        rows.append({
            "pipeline_id": pid, "position": i, "stage": r.stage, "stage_dataset_id": r.dataset_id, "rows_in": n_in,
            "rows_out": r.rows, "rejects": r.rejects, "rejects_by_reason": json.dumps(st.get("rejects_by_reason") or {}),
            "llm_calls": int(sum(v["calls"] for v in u.values())), "cached_calls": int(sum(v["cached"] for v in u.values())),
            "retries": int(sum(v["retries"] for v in u.values())), "llm_errors": int(sum(v["errors"] for v in u.values())),
            "prompt_tokens": int(sum(v["prompt_tokens"] for v in u.values())),
            "completion_tokens": int(sum(v["completion_tokens"] for v in u.values())),
            "mean_latency_ms": max([v["mean_latency_ms"] for v in u.values()], default=0.0),
            "cost_usd": float(sum(v.get("cost_usd", 0.0) for v in u.values())),
            "unpriced_calls": int(sum(v.get("unpriced_calls", 0) for v in u.values())),
        })
        md_rows.append((r.stage, n_in, r.rows, r.rejects))
        for k, v in (st.get("rejects_by_reason") or {}).items():
            reasons[f"{r.stage}: {k}"] = v
        usage.update({f"{role} ({r.stage})": v for role, v in u.items()})
    extra = {r.stage: r.path for r in refs}
    verified = next((r for r in refs if r.stage == "verified"), None)
    if verified is not None:
        eq = (verified.stats or {}).get("equal", 0)
        md_rows.append(("verified (equal = D_ver)", verified.rows, eq, verified.rows - eq))
    publish_markdown("data-funnel", funnel_markdown(title, md_rows, reasons, usage, extra),
                     "data funnel of this run: rows in and out and rejects per stage, D_ver, LLM usage by role")
    if store.exists("funnel", pid):
        return store.ref("funnel", pid)
    return store.write("funnel", pa.Table.from_pylist(rows, schema=FUNNEL), dataset_id=pid,
                       parents=[r.dataset_id for r in refs], code_version="2")
