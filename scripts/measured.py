"""Write docs/measured.md from a storage root after ``make run``: the one place the docs' numbers
come from (wall time per stage, the funnel, the models, Table 1 with the paired comparison, and
the machine they were measured on), so README, configs and docs/training.md cannot drift from a
run: they link here instead of restating numbers.

usage: python scripts/measured.py [--root ./.progra] [--out docs/measured.md]
       (``make measured`` after ``make run``)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def machine() -> str:
    """CPU model, cores, memory and what ``local_dtype: auto`` picks here (AMX decides bf16 on a CPU)."""
    from progra_core.llm.hf import cpu_bf16

    model = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = re.search(r"model name\s*:\s*(.+)", text).group(1).strip()
    except (OSError, AttributeError):
        pass
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, AttributeError):
        pass
    amx = cpu_bf16()
    return (f"{model}, {len(os.sched_getaffinity(0))} cores{mem}; AMX {'yes' if amx else 'no'}, so local models run in "
            f"{'bf16' if amx else 'fp32'} (`local_dtype: auto`)")


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def stage_times(root: Path) -> list[tuple[str, str]]:
    """(part, minutes:seconds) from the newest ``run-*.log`` in which the stages ran (a later
    rerun that only hit the cache is skipped): data flow, SFT, PAG-RL, evaluation, total."""
    stamps: list[tuple[datetime, str]] = []
    for log in sorted((root / "logs").glob("run-*.log"), reverse=True):
        stamps = []
        for line in log.read_text(errors="replace").splitlines():
            m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ \S+\s+\S+: (.*)", line)
            if m:
                stamps.append((datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"), m.group(2)))
        if any(msg.startswith("sft_data -> ") for _, msg in stamps):
            break
    if not stamps:
        return []

    def first(pattern: str) -> datetime | None:
        return next((t for t, msg in stamps if re.search(pattern, msg)), None)

    marks = [("data flow", stamps[0][0], first(r"^sft_data -> ")), ("warm-up SFT", first(r"^sft_data -> "), first(r"^sft model ")),
             ("PAG-RL", first(r"^sft model "), first(r"^grpo model ")),
             ("evaluation", first(r"^grpo model ") or first(r"^sft model "), stamps[-1][0]), ("total", stamps[0][0], stamps[-1][0])]
    out = []
    for name, a, b in marks:
        if a and b:
            s = int((b - a).total_seconds())
            out.append((name, f"{s // 60}:{s % 60:02d}"))
    return out


def render(root: Path) -> str:
    from flows.console import HEADLINE_METRICS
    from progra_core.evaluation import report
    from storage import Catalog

    cat = Catalog(str(root))
    md = ["# Measured", "",
          f"Written by `make measured` ({Path(__file__).name}) from the storage root of one `make run` on the embedded "
          "profile. README, configs/embedded.yaml and docs/training.md link here for the current numbers instead of "
          "restating them.", "",
          f"- **When**: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit `{commit()}`",
          f"- **Machine**: {machine()}", ""]
    times = stage_times(root)
    if times:
        md += ["## Wall time (from the run log)", "", "| part | m:ss |", "|---|---:|"] + [f"| {a} | {b} |" for a, b in times] + [""]
    funnel = cat.sql("select stage, rows_in, rows_out, rejects, llm_calls, cost_usd from funnel_latest order by position").to_pylist()
    if funnel:
        md += ["## Data funnel", "", "| stage | in | out | rejects | LLM calls | cost USD |", "|---|---:|---:|---:|---:|---:|"]
        md += [f"| {r['stage']} | {r['rows_in']} | {r['rows_out']} | {r['rejects']} | {r['llm_calls']} | {r['cost_usd']:.4f} |"
               for r in funnel]
        ver = cat.sql("select reason, count(*) n from verified_latest group by 1 order by 1").to_pylist()
        kinds = cat.sql("select kind, split, count(*) n from sft_examples_latest group by 1, 2 order by 1, 2").to_pylist()
        md += ["", "Verification: " + ", ".join(f"{r['reason']} {r['n']}" for r in ver) + ".",
               "sft_examples: " + ", ".join(f"{r['kind']}/{r['split']} {r['n']}" for r in kinds) + ".", ""]
    models = cat.sql("select stage, method, model_id, metrics from models order by created_at").to_pylist()
    if models:
        md += ["## Models", "", "| stage | method | model id | steps | s/step | metrics |", "|---|---|---|---:|---:|---|"]
        for m in models:
            st = json.loads(m["metrics"] or "{}")
            keys = (*HEADLINE_METRICS.get(m["stage"], ()), *(("kinds", "too_long") if m["stage"] == "sft" else ("rollouts",)))
            md.append(f"| {m['stage']} | {m['method']} | `{m['model_id']}` | {st.get('steps')} | {st.get('seconds_per_step')} | "
                      + "; ".join(f"{k} {json.dumps(st.get(k)) if isinstance(st.get(k), dict) else st.get(k)}" for k in keys) + " |")
        roll = cat.sql("select step, count(*) n, round(avg(total_reward), 3) r, sum((rewards.fmt <> 0)::int) fmt, "
                       "sum((rewards.acc <> 0)::int) acc from rollouts_latest group by 1 order by 1").to_pylist()
        if roll:
            md += ["", "PAG-RL per step: " + "; ".join(f"step {r['step']}: return {r['r']}, TEMPLATE non-zero {r['fmt']}/{r['n']}, "
                                                      f"SUCCESS {r['acc']}/{r['n']}" for r in roll) + "."]
        md.append("")
    evals = cat.sql("select dataset_id, config from datasets where stage = 'eval_results' order by created_at").to_pylist()
    if evals:
        ids = [e["dataset_id"] for e in evals]
        summary = cat.eval_summary(ids)
        headers, body = report.table1(summary)
        md += ["## Evaluation", "", report.to_markdown(headers, body, report.table_title(summary)).replace("# ", "", 1), ""]
        if len(ids) >= 2:
            first, last = ids[0], ids[-1]
            rows = {i: cat.sql("select * from eval_results where dataset_id = ?", [i]).to_pylist() for i in (first, last)}
            h, b = report.paired(rows[first], rows[last], (first[:8], last[:8]))
            md += [f"`progra report {first[:8]} {last[:8]} --compare` (the first and the last evaluation of the run):", "",
                   report.to_markdown(h, b), ""]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="./.progra")
    ap.add_argument("--out", default=str(REPO / "docs" / "measured.md"))
    a = ap.parse_args()
    root = Path(a.root)
    if not (root / "datasets").is_dir():
        sys.exit(f"no storage root at {root.resolve()}: run `make run` first")
    Path(a.out).write_text(render(root) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
