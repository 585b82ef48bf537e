"""Stage ``ingest`` -> dataset ``trajectories``: BFCL's multi-turn split (ground truth executed in
``BFCLEnv``), τ²-bench airline/retail train tasks (reference actions executed in ``Tau2Env``),
plus optional chat-format JSONL files and local HF folders. Bad records become
``rejects`` rows with a reason; duplicate trajectory ids across sources are rejected, never merged.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version

import pyarrow as pa

from progra_core import versioning
from progra_core.config import IngestConfig
from progra_core.envs.tau2 import tau2_version
from progra_core.schemas import TRAJECTORIES, reject
from progra_core.sources import bfcl, chat
from progra_core.sources import tau2 as tau2_data

__all__ = ["STAGE", "OUTPUT", "CODE_VERSION", "fingerprint_inputs", "ingest"]

STAGE = "ingest"
OUTPUT = "trajectories"
CODE_VERSION = versioning.code_version("1", __name__)


def bfcl_version() -> str:
    try:
        return version("bfcl-eval")
    except PackageNotFoundError:
        return "missing"


def _file_token(path: str) -> str:
    """A file's content digest, ``missing``, or why it cannot be read (the fingerprint stays
    defined, and :func:`ingest` turns the same reason into a reject)."""
    return versioning.digest_or_reason(path) if os.path.lexists(path) else "missing"


def fingerprint_inputs(cfg: IngestConfig) -> dict:
    """What besides the config section decides the output: the BFCL data version and the content
    of every extra input (each JSONL file's bytes; every file of an HF folder, so an in-place edit
    of the same size is re-ingested). Inputs are hashed, never parsed: a pipe or a dangling link is
    named unreadable, never waited on."""
    files: dict[str, object] = {p: _file_token(p) for p in cfg.jsonl}
    for p in cfg.hf:
        files[p] = versioning.tree_digest(p, skip_hidden=False) if os.path.isdir(p) else _file_token(p)
    out = {"config": cfg.model_dump(), "bfcl_eval": bfcl_version(), "files": files}
    if cfg.tau2_domains:
        out["tau2"] = tau2_version()
    return out


def _bfcl_entries(cfg: IngestConfig) -> list[dict]:
    split = None if cfg.bfcl_split == "all" else cfg.bfcl_split
    return bfcl.select_entries(cfg.bfcl_categories, split, cfg.held_out_percent, cfg.limit) if cfg.bfcl_categories else []


def _sources(cfg: IngestConfig, entries: list[dict]) -> Iterator[tuple[dict | None, dict | None]]:
    if entries:
        yield from bfcl.iter_trajectories(step_mode=cfg.step_mode, held_out_percent=cfg.held_out_percent, entries=entries)
    if cfg.tau2_domains:
        yield from tau2_data.iter_trajectories(cfg.tau2_domains, cfg.tau2_limit)
    for p in cfg.jsonl:
        token = _file_token(p)
        if token == "missing":
            yield None, reject(STAGE, p, "missing_file", f"JSONL file {p} does not exist")
            continue
        if token.startswith("unreadable"):  # a pipe, a device, a dangling link: never opened
            yield None, reject(STAGE, p, "unreadable_file", f"JSONL input {token.removeprefix('unreadable: ')}")
            continue
        yield from chat.iter_jsonl(p)
    for p in cfg.hf:
        try:
            yield from chat.iter_hf_folder(p)
        except Exception as e:  # not a datasets folder, unreadable...
            yield None, reject(STAGE, p, "bad_hf_folder", f"{type(e).__name__}: {e}")


def ingest(cfg: IngestConfig, progress: Callable[[int, int], None] | None = None) -> tuple[pa.Table, list[dict], dict]:
    """Build the ``trajectories`` table. Returns (table, rejects, stats).

    ``progress(done, total)`` is called per record; ``total`` counts BFCL entries exactly and
    extra files by their records as they are read."""
    entries = _bfcl_entries(cfg)
    rows: list[dict] = []
    rejects: list[dict] = []
    seen: set[str] = set()
    for row, rej in _sources(cfg, entries):
        if rej is not None:
            rejects.append(rej)
        elif row["trajectory_id"] in seen:
            rejects.append(reject(STAGE, row["trajectory_id"], "duplicate_id", "trajectory id already ingested from another source"))
        else:
            seen.add(row["trajectory_id"])
            rows.append(row)
        if progress is not None:
            done = len(rows) + len(rejects)
            progress(done, max(len(entries), done))
    table, unstorable = _table(rows)
    rejects += unstorable
    rows = [r for r in rows if r["trajectory_id"] not in {x["input_id"] for x in unstorable}]
    stats = {
        "rows": len(rows),
        "rejects": len(rejects),
        "by_source": dict(Counter(r["source"] for r in rows)),
        "rejects_by_reason": dict(Counter(r["reason"] for r in rejects)),
        "turns": sum(r["n_turns"] for r in rows),
        "calls": sum(r["n_calls"] for r in rows),
    }
    return table, rejects, stats


def _table(rows: list[dict]) -> tuple[pa.Table, list[dict]]:
    """The trajectories table; a row Arrow cannot store (found only when the whole build fails,
    then row by row) is a reject instead of the end of the run."""
    try:
        return pa.Table.from_pylist(rows, schema=TRAJECTORIES), []
    except (pa.ArrowException, ValueError, TypeError, UnicodeError, OverflowError):
        pass
    good, bad = [], []
    for r in rows:
        try:
            pa.Table.from_pylist([r], schema=TRAJECTORIES)
            good.append(r)
        except (pa.ArrowException, ValueError, TypeError, UnicodeError, OverflowError) as e:
            bad.append(reject(STAGE, r["trajectory_id"], "unstorable", f"{type(e).__name__}: {str(e)[:300]}"))
    return pa.Table.from_pylist(good, schema=TRAJECTORIES), bad
