"""One model under test on every benchmark the ``evaluate`` section names, as one dataset.

BFCL multi-turn (:mod:`progra_core.evaluation.bfcl`), τ²-bench (:mod:`progra_core.evaluation.tau2`),
the held-out next call and your envs' held-out trajectories (``evaluate.held_out``: played by the
BFCL harness in their own env) rows share the ``eval_results`` schema (``benchmark`` tells them apart). What enters the
evaluation's fingerprint is decided here too, so the task only resolves names and stores."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict

import pyarrow as pa

from progra_core import methods, versioning
from progra_core.config import PipelineConfig
from progra_core.envs.tau2 import tau2_version
from progra_core.evaluation import bfcl, next_call, tau2
from progra_core.evaluation.bfcl import Subject
from progra_core.llm.types import Endpoint
from progra_core.schemas import EVAL_RESULTS, reject
from progra_core.sources import bfcl as bfcl_data
from progra_core.sources import chat

__all__ = ["CODE_VERSION", "payload", "evaluate_subject", "planned_runs", "leaked_runs"]

CODE_VERSION = versioning.code_version("1", __name__)

#: Fields of the section that name who is tested or how to reach it, not what the test is.
_NOT_THE_TEST = ("models", "api_base", "api_key_env", "api_key_secret")


def payload(cfg: PipelineConfig, subject: Subject) -> dict:
    """What an evaluation's rows depend on: the test (section less the model list and keys), the
    subject, the base policy and the BFCL split; with τ², the user simulator too."""
    section = {k: v for k, v in cfg.section("evaluate").items() if k not in _NOT_THE_TEST}
    out = {"evaluate": section, "subject": asdict(subject), "policy": cfg.models.policy,
           "held_out_percent": cfg.ingest.held_out_percent, "tool_docs": cfg.tool_docs}
    if cfg.evaluate.next_call_limit:  # the cases are asked in the run's method's prompt style
        out["next_call_prompt"] = {"awareness": methods.recipe(cfg.method).awareness_prompt,
                                   "step_mode": cfg.ingest.step_mode}
    if cfg.evaluate.held_out:  # the test files' bytes, not only their names
        out["held_out_files"] = {p: versioning.tree_digest(p, skip_hidden=False) if os.path.isdir(p) else _digest(p)
                                 for p in cfg.evaluate.held_out}
    if cfg.evaluate.tau2_domains:  # the user simulator shapes every tau2 conversation
        out["user_simulator"] = {"model": cfg.models.user_simulator, "api_base": cfg.models.api_base.get("user_simulator"),
                                 "tau2": tau2_version(), "code": tau2.CODE_VERSION}
    return out


def _digest(path: str) -> str:
    import hashlib

    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()[:16]
    except OSError as e:
        return f"unreadable: {type(e).__name__}"


def planned_runs(cfg: PipelineConfig) -> tuple[list[dict], list, list[dict]]:
    """The BFCL entries (and your envs' held-out trajectories as entries), τ² tasks and
    next-call cases of this evaluation."""
    ev = cfg.evaluate
    entries = bfcl.select_test_entries(ev, cfg.ingest.held_out_percent) if ev.categories else []
    tasks = tau2.select_tau2_tasks(ev) if ev.tau2_domains else []
    awareness = methods.recipe(cfg.method).awareness_prompt
    cases = next_call.next_call_cases(ev, cfg.ingest.held_out_percent, awareness, cfg.tool_docs, cfg.ingest.step_mode)
    held, _ = held_out_trajectories(ev)
    for env in sorted({t["env"] for t in held}):
        mine = [t for t in held if t["env"] == env]
        entries += [bfcl.trajectory_entry(t) for t in mine]
        cases += next_call.trajectory_cases(mine, awareness, cfg.tool_docs, category=env)
    return entries, tasks, cases


def held_out_trajectories(ev) -> tuple[list[dict], list[dict]]:
    """``evaluate.held_out``'s trajectories (held out whatever their ``split`` says) and a reject
    per record that cannot be read or names no env."""
    rows, rejects = [], []
    for path in ev.held_out:
        source = chat.iter_hf_folder(path, "held_out") if os.path.isdir(path) else chat.iter_jsonl(path, "held_out")
        mine = 0
        for row, rej in source:
            if rej is not None:
                rejects.append({**rej, "stage": "evaluate"})
            elif not row.get("env"):
                rejects.append(reject("evaluate", row["trajectory_id"], "no_env", "a held_out trajectory names the env it plays in"))
            elif ev.held_out_limit is None or mine < ev.held_out_limit:
                rows.append({**row, "split": "held_out"})
                mine += 1
    return rows, rejects


def _scenario_of(run_id: str) -> int | None:
    """The BFCL scenario index of an entry id or a next-call case id (``bfcl:multi_turn_base_7#t0s1``,
    ``end:bfcl:multi_turn_base_7#t0``); None for anything else (τ² tasks)."""
    body = run_id.split("#", 1)[0].rsplit(":", 1)[-1]
    try:
        return bfcl_data.scenario_index(body) if body.startswith("multi_turn_") else None
    except ValueError:
        return None


def leaked_runs(entries: list[dict], cases: list[dict], trained_source_ids: set[str]) -> list[str]:
    """The BFCL entries and next-call cases whose scenario the model was trained on: BFCL's
    categories are variants of the same scenarios, so ``multi_turn_miss_func_7`` leaks when
    ``multi_turn_base_7`` was trained on. ``trained_source_ids``: the BFCL ids of the
    trajectories in the model's lineage."""
    trained = {n for n in map(_scenario_of, trained_source_ids) if n is not None}
    ids = [e["id"] for e in entries] + [c["case_id"] for c in cases]
    return [i for i in ids if _scenario_of(i) in trained]


def evaluate_subject(cfg: PipelineConfig, gateway, subject: Subject, user: Endpoint,
                     progress: Callable[[str, int], Callable[[int, int], None] | None]) -> tuple[pa.Table, list[dict], dict]:
    """Play ``subject`` on the BFCL slice and the τ² slice; ``progress(benchmark, runs)`` makes a
    progress callback for each. Returns (rows, rejects, stats)."""
    ev = cfg.evaluate
    entries, tasks, cases = planned_runs(cfg)
    t0 = time.perf_counter()
    tables, rejects, seconds = [], held_out_trajectories(ev)[1], {}
    if cases:
        tables.append(next_call.run_next_call(cases, gateway, subject, ev, progress("next-call", len(cases))))
        seconds["next_call"] = round(time.perf_counter() - t0, 2)
    for bench in dict.fromkeys(e.get("env") or "bfcl" for e in entries):  # BFCL, then each of your envs, timed apart
        mine = [e for e in entries if (e.get("env") or "bfcl") == bench]
        t1 = time.perf_counter()
        table, rej = bfcl.run_bfcl(mine, gateway, subject, ev, progress(bench, len(mine) * ev.trials), cfg.tool_docs)
        tables.append(table)
        rejects += rej
        seconds[bench] = round(time.perf_counter() - t1, 2)
    if tasks:
        t1 = time.perf_counter()
        user_fields = {"model": user.model, "api_base": user.api_base, "api_key_env": user.api_key_env}
        table, rej = tau2.run_tau2(tasks, gateway, subject, ev, user_fields, docs_style=cfg.tool_docs,
                                   progress=progress("tau2", len(tasks) * ev.trials))
        tables.append(table)
        rejects += rej
        seconds["tau2"] = round(time.perf_counter() - t1, 2)
    table = pa.concat_tables(tables) if tables else EVAL_RESULTS.empty_table()
    wall = time.perf_counter() - t0
    by_benchmark: dict[str, dict[str, int]] = {}  # BFCL entries, τ² runs and next-call cases are not one count
    for bench, ok in zip(table.column("benchmark").to_pylist(), table.column("passed").to_pylist(), strict=True):
        d = by_benchmark.setdefault(bench, {"runs": 0, "passed": 0})
        d["runs"] += 1
        d["passed"] += bool(ok)
    stats = {"model_ref": subject.model_ref, "method": subject.method, "entries": len(entries), "tau2_tasks": len(tasks),
             "by_benchmark": by_benchmark,
             "next_call_cases": len(cases),
             "runs": table.num_rows, "passed": sum(table.column("passed").to_pylist()), "seconds": round(wall, 2),
             "seconds_by_benchmark": seconds, "seconds_per_run": round(wall / max(table.num_rows, 1), 2),
             "rows_in": (len(entries) + len(tasks)) * ev.trials + len(cases)}
    return table, rejects, stats
