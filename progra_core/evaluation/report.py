"""Table 1 of the paper from ``eval_summary`` rows: one row per model/method, BFCL accuracy per
category and Overall (the mean of the Base, Miss F. and Miss P. columns, as the paper computes
it), plus per-turn accuracy, then τ²-bench Airline and Retail (Table 1) and Telecom (Table 3,
the out-of-domain test) as pass rates averaged over trials. ``compare`` puts several runs side
by side with the change in Overall; ``paired`` compares the first and the last with paired
bootstrap intervals over entries, the detectable difference and τ²'s pass^k (``stats``). Pure
functions over dict rows: the CLI prints them with rich, the flow publishes them as a Prefect
markdown artifact."""

from __future__ import annotations

from collections.abc import Sequence

from progra_core.config import PipelineConfig
from progra_core.evaluation import stats

__all__ = ["COLUMNS", "TABLE_TITLE", "table_title", "table1", "compare", "paired", "to_markdown", "report_note"]

TABLE_TITLE = "Accuracy (%)"

#: eval_summary category -> Table 1 column, in the paper's order.
COLUMNS = {"base": "Base", "miss_func": "Miss F.", "miss_param": "Miss P.", "long_context": "Long ctx",
           "airline": "Airline", "retail": "Retail", "telecom": "Telecom"}
OVERALL_OF = ("base", "miss_func", "miss_param")
#: Held-out next-call columns: (header, eval_summary category, column).
NEXT_CALL = (("Next: valid", "call", "valid_rate"), ("Next: func", "call", "function_rate"),
             ("Next: exact", "call", "accuracy"), ("Next: ends turn", "end", "accuracy"))


def plugin_columns(summary: Sequence[dict]) -> list[tuple[str, str, str]]:
    """A plugin env's columns (its category is the env's name): entry and per-turn accuracy of its
    held-out trajectories, then its next-call exact and ends-turn rates (``<env>:call``, ``<env>:end``)."""
    known = set(COLUMNS) | {"call", "end"}
    envs = sorted({r["category"] for r in summary if r["category"] not in known and ":" not in r["category"]}
                  | {r["category"].split(":")[0] for r in summary if ":" in r["category"]})
    cols = []
    for env in envs:
        for header, cat, key in ((env, env, "accuracy"), (f"{env} turn", env, "turn_accuracy"),
                                 (f"{env} next exact", f"{env}:call", "accuracy"), (f"{env} ends turn", f"{env}:end", "accuracy")):
            if any(r["category"] == cat for r in summary):
                cols.append((header, cat, key))
    return cols


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def _rows_by_model(summary: Sequence[dict]) -> dict[tuple[str, str], dict[str, dict]]:
    out: dict[tuple[str, str], dict[str, dict]] = {}
    for r in summary:
        out.setdefault((r["model_ref"], r["method"]), {})[r["category"]] = r
    return out


def _overall(cats: dict[str, dict], key: str) -> float | None:
    vals = [cats[c][key] for c in OVERALL_OF if c in cats and cats[c][key] is not None]
    return sum(vals) / len(vals) if vals else None


def table_title(summary: Sequence[dict]) -> str:
    """The title names the benchmarks whose rows are in the table (it said "BFCL multi-turn and
    tau2-bench" when no τ² task ran)."""
    cats = {r["category"] for r in summary}
    names = [name for name, present in (("BFCL multi-turn", cats & set(COLUMNS) - set(TAU2)), ("tau2-bench", cats & set(TAU2)),
                                         ("held-out next call", cats & {"call", "end"}),
                                         ("your envs", {c for c in cats if c not in COLUMNS and c not in ("call", "end")})) if present]
    return f"{TABLE_TITLE}: {', '.join(names)}" if names else TABLE_TITLE


def table1(summary: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: Model (an id prefix: ids take prefixes everywhere), Method, Overall, one
    column per category present, per-turn Overall, runs (entries × trials)."""
    cats = [c for c in COLUMNS if any(r["category"] == c for r in summary)]
    nxt = [col for col in NEXT_CALL if any(r["category"] == col[1] for r in summary)]
    mine = plugin_columns(summary)
    played = set(COLUMNS) | {cat for _, cat, _ in mine if ":" not in cat}  # entries run, not next-call cases
    nxt += mine
    headers = ["Model", "Method", "Overall", *(COLUMNS[c] for c in cats), "Turn acc.", "Runs", *(h for h, _, _ in nxt)]
    body = []
    for (model, method), by_cat in _rows_by_model(summary).items():
        runs = sum(int(r["runs"]) for c, r in by_cat.items() if c in played)
        body.append([_short(model), method, _fmt(_overall(by_cat, "accuracy")),
                     *(_fmt(by_cat[c]["accuracy"]) if c in by_cat else "–" for c in cats),
                     _fmt(_overall(by_cat, "turn_accuracy")), str(runs),
                     *(_fmt(by_cat[c][k]) if c in by_cat else "–" for _, c, k in nxt)])
    return headers, body


def _short(model_ref: str) -> str:
    """A 16-hex model id as its first 8 (what a terminal table has room for); names as they are."""
    return model_ref[:8] if len(model_ref) == 16 and all(c in "0123456789abcdef" for c in model_ref) else model_ref


def compare(runs: Sequence[tuple[str, Sequence[dict]]]) -> tuple[list[str], list[list[str]]]:
    """Side by side: for each model/method, Overall and each category per run, and Δ Overall of
    the last run against the first. Runs that share no model (the base's evaluation and the
    trained one's) are one row per run instead, every metric of Table 1 included: side by side
    they were all "–"."""
    labels = [label for label, _ in runs]
    per_run = [_rows_by_model(s) for _, s in runs]
    if not set.intersection(*(set(p) for p in per_run)):
        tagged = [{**r, "model_ref": f"{label}\n{_short(r['model_ref'])}"} for label, s in runs for r in s]
        headers, body = table1(tagged)
        return ["Run / model", *headers[1:]], body
    cats = [c for c in COLUMNS if any(r["category"] == c for _, s in runs for r in s)]
    headers = ["Model", "Method"]
    for name in ["Overall", *(COLUMNS[c] for c in cats)]:
        headers += [f"{name} [{label}]" for label in labels]
    headers.append("Δ Overall")
    keys = list(dict.fromkeys(k for p in per_run for k in p))
    body = []
    for key in keys:
        overall = [_overall(p[key], "accuracy") if key in p else None for p in per_run]
        row = [key[0], key[1], *map(_fmt, overall)]
        for c in cats:
            row += [_fmt(p[key][c]["accuracy"]) if key in p and c in p[key] else "–" for p in per_run]
        first, last = overall[0], overall[-1]
        row.append("–" if first is None or last is None else f"{last - first:+.2f}")
        body.append(row)
    return headers, body


TAU2 = ("airline", "retail", "telecom")


def _passed(r: dict) -> float:
    return 1.0 if r["passed"] else 0.0


def _points(rows: Sequence[dict], keep, value=_passed) -> list[tuple[str, str, float]]:
    return [(r["category"], r["entry_id"], value(r)) for r in rows if keep(r)]


def _turn_share(r: dict) -> float:
    turns = r.get("turn_passed") or []
    return sum(map(bool, turns)) / len(turns)


def _pct(e: stats.Estimate) -> stats.Estimate:
    return stats.Estimate(100 * e.value, 100 * e.low, 100 * e.high)


def paired(first: Sequence[dict], last: Sequence[dict], labels: tuple[str, str] = ("A", "B"), n_boot: int = 2000,
           seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """Two runs' ``eval_results`` rows (one model each) on their common entries: per metric (BFCL
    Overall and categories, τ² domains, next-call exact) each run with its 95 % paired bootstrap
    interval, the difference last − first with its interval, the smallest difference the run
    could detect (80 % power) and the entries compared; BFCL's per-entry share of passed turns and
    next-call turn ends too; then τ²'s pass^k per domain and run."""
    def benchmark_rows(cats):
        return lambda r: r["category"] in cats and r.get("benchmark") != "next_call"

    metrics = []  # (name, which rows, each row's value)
    if any(r["category"] in OVERALL_OF for r in first):
        metrics.append(("Overall", benchmark_rows(OVERALL_OF), _passed))
    metrics += [(COLUMNS[c], benchmark_rows((c,)), _passed) for c in COLUMNS if any(benchmark_rows((c,))(r) for r in first)]
    # BFCL is all-or-nothing per entry; the share of an entry's turns that pass moves first
    metrics.append(("BFCL turn acc. (mean per entry)",
                    lambda r: r.get("benchmark") == "bfcl" and bool(r.get("turn_passed")), _turn_share))
    metrics.append(("Next: exact", lambda r: r.get("benchmark") == "next_call" and r["category"] == "call", _passed))
    metrics.append(("Next: ends turn", lambda r: r.get("benchmark") == "next_call" and r["category"] == "end", _passed))
    headers = ["Metric", labels[0], labels[1], f"Δ ({labels[1]} − {labels[0]})", "Detectable Δ", "Entries"]
    body = []
    for name, keep, value in metrics:
        try:
            p = stats.paired_bootstrap(_points(first, keep, value), _points(last, keep, value), n_boot=n_boot, seed=seed)
        except ValueError:  # a metric one of the runs has no entries for
            continue
        d = _pct(p.diff)
        body.append([name, _pct(p.a).fmt(), _pct(p.b).fmt(), f"{d.value:+.1f} [{d.low:+.1f}, {d.high:+.1f}]",
                     f"{100 * p.mde:.1f}", str(p.entries)])
    for c in TAU2:
        ks = []
        for rows in (first, last):
            trials: dict[str, list[bool]] = {}
            for r in rows:
                if r["category"] == c:
                    trials.setdefault(r["entry_id"], []).append(bool(r["passed"]))
            try:
                ks.append(stats.pass_hat_ks(trials) if trials else None)
            except ValueError:
                ks.append(None)
        for k in sorted(set().union(*(x or {} for x in ks))):
            body.append([f"{COLUMNS[c]} pass^{k}", *(f"{100 * x[k]:.1f}" if x and k in x else "–" for x in ks), "", "", ""])
    return headers, body


def to_markdown(headers: list[str], body: list[list[str]], title: str | None = None) -> str:
    md = [f"# {title}", ""] if title else []
    md += ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(headers))) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(md)


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
    if ev.next_call_limit:
        parts.append(f"Next call: {ev.next_call_limit} held-out BFCL base steps (+ {max(1, ev.next_call_limit // 4)} turn ends), "
                     "ground-truth prefix replayed, the training prompt: valid = decodes to calls, func = the right "
                     "functions, exact = schema_equal with a_fc, ends turn = answers without calls when the turn is done.")
    parts.append(f"{ev.trials} trial(s), prompt `{ev.prompt}`.")
    return " ".join(parts)
