"""Held-out next-call evaluation: a fine-grained learning signal BFCL's all-or-nothing entries hide.

From BFCL's held-out base scenarios (never trained on), each case is one step with its
ground-truth prefix already played: the prompt is exactly what SFT shows for that step (the same
system prompt, the same tool-docs rendering, the same layout: the awareness layout for PAG
methods, the raw prefix of calls and results otherwise; steps cut as ``ingest.step_mode`` cuts
them), and the model writes its next action once. Two kinds of case:

* ``call`` (the step calls functions): *valid* = the output decodes to a call list; *function* =
  it calls the same functions (as a multiset); *exact* = ``schema_equal`` with a_fc (positional
  arguments bound through the env, as verification does);
* ``end`` (the turn's calls are all done): *ended* = the output answers without calls.

Every subject of one run gets the same cases and the same prompt style (the run's method's), so
base and trained compare like for like. Rows share ``eval_results`` (``benchmark = 'next_call'``,
``category`` call / end, ``passed`` = exact / ended, ``valid_call``, ``right_function``)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pyarrow as pa

from progra_core import versioning
from progra_core.calls import calls_from_records, format_call, schema_equal
from progra_core.config import EvaluateConfig, SegmentConfig, SFTDataConfig
from progra_core.data.awareness import template_target
from progra_core.data.segment import segment_trajectory
from progra_core.data.sft_data import pag_prompt, turn_end_examples
from progra_core.envs.factory import resolver
from progra_core.evaluation.bfcl import Subject, force_answers
from progra_core.llm.types import ChatRequest
from progra_core.prompts.policy import ANSWER_STOP, build_prompt, decode_calls
from progra_core.prompts.tools import DocStyle
from progra_core.schemas import EVAL_RESULTS
from progra_core.sources import bfcl as bfcl_data
from progra_core.sources.bfcl import StepMode

__all__ = ["CODE_VERSION", "next_call_cases", "trajectory_cases", "run_next_call"]

CODE_VERSION = versioning.code_version("1", __name__)


def next_call_cases(cfg: EvaluateConfig, held_out_percent: int, awareness: bool, docs_style: DocStyle,
                    step_mode: StepMode = "per_call") -> list[dict]:
    """The cases: ``cfg.next_call_limit`` call steps and a quarter as many turn ends, from the
    held-out BFCL base scenarios segmented as training segments them (``step_mode``), those with
    the shortest prompts first (cheap and deterministic). With ``awareness`` the prompts are in
    the awareness layout SFT and PAG-RL show (``sft_data.pag_prompt``); a turn end's earlier step
    is shown in the template awareness form a trained policy writes."""
    if not cfg.next_call_limit:
        return []
    trajectories = [bfcl_data.entry_to_trajectory(e, step_mode=step_mode, held_out_percent=held_out_percent)
                    for e in bfcl_data.select_entries(["base"], "held_out", held_out_percent)]
    return trajectory_cases(trajectories, awareness, docs_style, cfg.next_call_limit)


def trajectory_cases(trajectories: Sequence[dict], awareness: bool, docs_style: DocStyle, limit: int | None = None,
                     category: str = "") -> list[dict]:
    """Next-call cases of trajectories as :func:`next_call_cases` makes them: every call step
    and turn end (``limit``: that many call steps and a quarter as many ends, shortest first).
    ``category`` prefixes the rows' call / end (a plugin env's own columns: ``shop:call``)."""
    segs = [s for t in trajectories for s in segment_trajectory(t, SegmentConfig())]
    prefix = f"{category}:" if category else ""
    calls = []
    for s in segs:
        prompt = pag_prompt(s, docs_style) if awareness else build_prompt(s, awareness=False, docs_style=docs_style)
        calls.append({"case_id": s["segment_id"], "kind": "call", "category": f"{prefix}call", "prompt": prompt,
                      "target": s["target_calls"], "env": s["env"], "involved_classes": s["involved_classes"]})
    taught = {(s["trajectory_id"], s["turn_index"], s["step_index"]): template_target(s) for s in segs} if awareness else None
    env_of = {s["trajectory_id"]: (s["env"], s["involved_classes"]) for s in segs}
    ends = [{"case_id": e["example_id"], "kind": "end", "category": f"{prefix}end", "prompt": e["prompt"], "target": [],
             "env": env_of.get(e.get("trajectory_id"), ("bfcl", []))[0], "involved_classes": []}
            for e in turn_end_examples([{**s, "split": "train"} for s in segs], None, awareness, docs_style,
                                       SFTDataConfig(validation_percent=0), taught)]

    def size(case):
        return (sum(len(m["content"] or "") for m in case["prompt"]), case["case_id"])

    if limit is None:
        return sorted(calls, key=size) + sorted(ends, key=size)
    return sorted(calls, key=size)[:limit] + sorted(ends, key=size)[:max(1, limit // 4)]


def _resolver(case: dict):
    return resolver(case["env"], case["involved_classes"])  # runs nothing


def _score(case: dict, text: str | None, error: str | None) -> dict:
    calls, decode_error = (None, error) if text is None else decode_calls(text)
    if case["kind"] == "end":
        return {"passed": text is not None and calls is None, "valid_call": None, "right_function": None,
                "calls": calls, "decode_error": decode_error,
                "error_type": None if text is not None and calls is None else ("next_call:error" if text is None else "next_call:no_end")}
    target = calls_from_records(case["target"])
    valid = calls is not None
    same_fns = valid and Counter(c.name for c in calls) == Counter(c.name for c in target)
    exact = bool(same_fns and schema_equal(calls, target, resolve=_resolver(case)))
    etype = None if exact else ("next_call:error" if text is None else "next_call:invalid" if not valid else
                                "next_call:wrong_function" if not same_fns else "next_call:wrong_arguments")
    return {"passed": exact, "valid_call": valid, "right_function": bool(same_fns), "calls": calls,
            "decode_error": decode_error, "error_type": etype}


def run_next_call(cases: Sequence[dict], gateway, subject: Subject, cfg: EvaluateConfig,
                  progress: Callable[[int, int], None] | None = None) -> pa.Table:
    """One greedy answer per case, all in one gateway call; one ``eval_results`` row per case."""
    reqs = [ChatRequest(messages=c["prompt"], model=subject.model, role="policy", temperature=0.0,
                        max_tokens=cfg.next_call_max_tokens, stop=[ANSWER_STOP], seed=cfg.seed, api_base=subject.api_base,
                        api_key_env=subject.api_key_env, id=c["case_id"]) for c in cases]
    done = [0]

    def tick(_i, _r):
        done[0] += 1
        if progress is not None:
            progress(done[0], len(reqs))

    results = force_answers(gateway, reqs, gateway.batch(reqs, on_result=tick), cfg.forced_answer_tokens) if reqs else []
    rows, now = [], datetime.now(UTC)
    for case, res in zip(cases, results, strict=True):
        s = _score(case, res.text if res.ok else None, res.error)
        calls = [format_call(c) for c in s["calls"] or []]
        rows.append({
            "model_ref": subject.model_ref, "method": subject.method, "model": subject.model, "prompt": "policy",
            "benchmark": "next_call", "category": case.get("category", case["kind"]), "entry_id": case["case_id"], "trial": 0,
            "passed": s["passed"], "turn_passed": [], "turn_errors": [], "first_failed_turn": None, "n_turns": 1,
            "turns_played": 1, "n_steps": 1, "n_calls": len(calls), "error_type": s["error_type"], "error": res.error,
            "steps": [{"turn": 0, "step": 0, "text": res.text, "calls": calls, "observations": [],
                       "decode_error": s["decode_error"]}],
            "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens, "latency_ms": res.latency_ms,
            "created_at": now, "reward": None, "transcript": json.dumps({"target": [c["text"] for c in case["target"]]}),
            "valid_call": s["valid_call"], "right_function": s["right_function"],
        })
    return pa.Table.from_pylist(rows, schema=EVAL_RESULTS)
