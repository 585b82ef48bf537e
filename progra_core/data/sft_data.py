"""Stage ``sft_data``: D_sft = D_aug ∪ D_cs as chat examples TRL consumes directly.

Every awareness and turn-end prompt is in the awareness layout a PAG-RL rollout shows at the same
step (``policy.turn_messages``, built here by :func:`pag_prompt`): the PAG system prompt
(instructions + tools), the progress of the earlier turns (``policy.progress_note`` of c_his: each
request and the calls that served it, the summary the previous turn's closing answer writes) with
the current request, and this turn's earlier steps as the policy is taught to write them. Under the
PAG system prompt every target carries a summary, so the format TEMPLATE pays is the only one the
policy is taught there.

* awareness examples (one per augmented row; an augmented example's own inputs where it changed
  them): target = ``<summary>S^a</summary><think>rationale</think><answer>[calls]</answer>`` (Fig. 10);
* cold-start examples (D_cs): segments of D *without* an awareness row (no prompt is taught two
  answers), target = only the well-formed ``<answer>[calls]</answer>``, shown under the plain policy
  prompt that asks for exactly that (the raw conversation, ``policy.build_prompt``): they teach the
  call syntax and the tools without teaching the PAG prompt a second, note-less format (which the
  policy then wrote on 32 of 32 held-out first steps and 12 of 12 rollouts, TEMPLATE 0);
  ``cold_start_ratio`` per awareness example, at least ``cold_start_min``;
* turn-end examples (``turn_ends``): for every turn of the trajectories above (at most
  ``turn_end_ratio`` per call example, the turns a call example teaches first), the prompt after the
  turn's last call and its results, target = the progress note of every turn so far as the
  summary, then a plain answer (the turn's reply, or ``TURN_DONE``). BFCL and synthesized turns
  carry no reply, so without these the policy is never shown how a turn ends, and in BFCL a turn
  ends only on an answer without calls; with the summary, TEMPLATE's format holds on every step.

Rows store ``messages`` (prompt + completion), and ``prompt`` / ``completion`` separately, so
TRL can train on completions only. The train/validation split is by trajectory (hash of its id),
so no trajectory contributes to both sides. Held-out BFCL scenarios never enter.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterable

import pyarrow as pa

from progra_core import versioning
from progra_core.calls import calls_from_records
from progra_core.config import SFTDataConfig
from progra_core.data.awareness import template_target
from progra_core.prompts import policy as policy_prompts
from progra_core.prompts.policy import build_prompt
from progra_core.prompts.tools import DocStyle
from progra_core.schemas import SFT_EXAMPLES, reject

__all__ = ["STAGE", "CODE_VERSION", "SFT_EXAMPLES", "sft_data", "split_for", "turn_end_examples", "pag_prompt"]

STAGE = "sft_data"
CODE_VERSION = versioning.code_version("1", __name__)


def split_for(trajectory_id: str, validation_percent: int, seed: int) -> str:
    h = int(hashlib.sha256(f"{seed}:{trajectory_id}".encode()).hexdigest()[:8], 16) % 100
    return "validation" if h < validation_percent else "train"


def _calls_text(records: list[dict]) -> str:
    return "[" + ", ".join(c["text"] for c in records) + "]"


def _row(kind: str, example_id: str, seg: dict, prompt: list[dict], target: str, cfg: SFTDataConfig, op: str | None = None) -> dict:
    completion = [{"role": "assistant", "content": target}]
    return {"example_id": example_id, "kind": kind, "op": op, "segment_id": seg["segment_id"], "trajectory_id": seg["trajectory_id"],
            "messages": prompt + completion, "prompt": prompt, "completion": completion,
            "split": split_for(seg["trajectory_id"], cfg.validation_percent, cfg.seed)}


def _closing(seg: dict) -> tuple[list[dict], str | None]:
    """After a turn's last call step: its results (the tool messages that open c_fut) and the
    turn's reply, when the trajectory has one."""
    future = list(seg.get("future") or [])
    results = []
    while future and future[0]["role"] == "tool":
        results.append(future.pop(0))
    reply = future[0]["content"] if future and future[0]["role"] == "assistant" else None
    if reply is not None and reply.lstrip().startswith("["):
        reply = None  # another call step, not a reply: this was not the turn's last step
    return results, reply


#: (trajectory id, turn, step) -> what the policy is taught to write at that step
Taught = dict[tuple[str, int, int], str]


def _taught_steps(seg: dict, steps: list[dict], taught: Taught) -> list[dict]:
    """This turn's earlier steps as the policy would have written them: each call step's SFT
    target (its awareness form where D_aug has one, else the bare answer), then its results."""
    out, k = [], 0
    for m in steps:
        if m["role"] == "assistant":
            text = taught.get((seg["trajectory_id"], seg["turn_index"], k)) or f"<answer>{m['content']}</answer>"
            out.append({"role": "assistant", "content": text})
            k += 1
        else:
            out.append(m)
    return out


def pag_prompt(seg: dict, docs_style: DocStyle, tools: str | None = None, context: dict | None = None,
               taught: Taught | None = None, steps: list[dict] | None = None) -> list[dict]:
    """A step's prompt in the awareness layout (``policy.turn_messages``, what a PAG-RL rollout
    shows): the PAG system prompt, the progress of the earlier turns (``policy.progress_note`` of
    c_his) with the current request, this turn's earlier steps as taught. ``context`` replaces any
    of ``history`` / ``query`` / ``prior_steps`` (an augmented example's own inputs)."""
    ctx = {**seg, **{k: v for k, v in (context or {}).items() if v is not None}}
    system = policy_prompts.policy_system(tools if tools is not None else seg["tools"], seg.get("scenario"), docs_style, True)
    progress = policy_prompts.progress_note(policy_prompts.earlier_turns(ctx.get("history")))
    prior = _taught_steps(seg, list(ctx.get("prior_steps") or []), taught or {})
    return policy_prompts.turn_messages(system, ctx["query"], progress, prior + list(steps or []))


def turn_end_examples(segments: Iterable[dict], trajectories: set[str] | None, awareness: bool, docs_style: DocStyle,
                      cfg: SFTDataConfig, taught: Taught | None = None) -> list[dict]:
    """One example per turn (of ``trajectories``, or all): the prompt after the turn's last call
    and its results, the target a plain answer. With ``awareness``: the awareness layout and a
    summary (the progress note of every turn so far, carried into the next turn); without: the
    raw conversation and the answer alone. Held-out scenarios never enter."""
    last: dict[tuple[str, int], dict] = {}
    turn_calls: dict[tuple[str, int], list[dict]] = {}
    turn_results: dict[tuple[str, int], list[dict]] = {}
    for seg in segments:
        if seg.get("split") == "held_out" or (trajectories is not None and seg["trajectory_id"] not in trajectories):
            continue
        key = (seg["trajectory_id"], seg["turn_index"])
        turn_calls.setdefault(key, []).extend(seg["target_calls"])
        turn_results.setdefault(key, []).extend(_closing(seg)[0])
        if key not in last or seg["step_index"] > last[key]["step_index"]:
            last[key] = seg
    out = []
    for key in sorted(last):
        seg = last[key]
        results, reply = _closing(seg)
        if awareness:
            taught = taught or {}
            # a step without an awareness row (a cold-start one) is shown as a note-writing policy
            # writes it under this prompt: its template note (what next-call's turn-end cases show)
            step = taught.get((seg["trajectory_id"], seg["turn_index"], seg["step_index"])) or template_target(seg)
            prompt = pag_prompt(seg, docs_style, taught=taught, steps=[{"role": "assistant", "content": step}, *results])
            turns = policy_prompts.earlier_turns(seg.get("history")) + [
                (seg["query"], calls_from_records(turn_calls[key]), [m["content"] for m in turn_results[key]])]
            target = policy_prompts.format_turn_end(reply, turns)
        else:
            prompt = build_prompt(seg, awareness=False, docs_style=docs_style)
            prompt += [{"role": "assistant", "content": _calls_text(seg["target_calls"])}, *results]
            target = policy_prompts.format_turn_end(reply)
        out.append(_row("turn_end", f"end:{seg['trajectory_id']}#t{seg['turn_index']}", seg, prompt, target, cfg))
    return out


def _fewer_ends(ends: list[dict], call_rows: list[dict], segments: dict[str, dict], cfg: SFTDataConfig) -> list[dict]:
    """At most ``turn_end_ratio`` turn ends per call row: first the ends of turns a call row teaches
    (the taught call and its closing stay together), then the rest, each group in a seeded order."""
    if cfg.turn_end_ratio is None:
        return ends

    def turn(row: dict) -> tuple[str, int]:
        return row["trajectory_id"], segments[row["segment_id"]]["turn_index"]

    taught = {turn(r) for r in call_rows}
    first, rest = [e for e in ends if turn(e) in taught], [e for e in ends if turn(e) not in taught]
    rng = random.Random(cfg.seed)
    rng.shuffle(first)
    rng.shuffle(rest)
    keep = {e["example_id"] for e in (first + rest)[:round(cfg.turn_end_ratio * len(call_rows))]}
    return [e for e in ends if e["example_id"] in keep]


def sft_data(augmented: list[dict], segments: dict[str, dict], cfg: SFTDataConfig,
             docs_style: DocStyle = "json") -> tuple[pa.Table, list[dict], dict]:
    """``augmented``: augmented rows; ``segments``: segment_id -> segment row (all of D's segments).

    Awareness and turn-end rows are in the awareness layout a PAG-RL rollout shows; cold-start rows
    in the plain layout their bare answers fit. Cold-start rows come only from segments without an
    awareness row, so no step is taught two different answers."""
    rows, rejects = [], []
    taught: Taught = {}
    for a in augmented:  # the original (op none) of each awareness row: what later steps show as this step
        seg = segments.get(a["segment_id"])
        if seg is not None and a["op"] == "none":
            taught[(seg["trajectory_id"], seg["turn_index"], seg["step_index"])] = policy_prompts.format_policy_target(
                _calls_text(a["target_calls"]), a["summary"] or a["text"], a["plan"], a["rationale"])
    for a in augmented:
        seg = segments.get(a["segment_id"])
        if seg is None:
            rejects.append(reject(STAGE, a["aug_id"], "missing_segment", f"segment {a['segment_id']} not found"))
            continue
        if seg.get("split") == "held_out":
            continue
        context = {k: a.get(k) for k in ("history", "query", "prior_steps")}  # the augmented inputs, where changed
        prompt = pag_prompt(seg, docs_style, a["tools"], context, taught)
        target = policy_prompts.format_policy_target(_calls_text(a["target_calls"]), a["summary"] or a["text"], a["plan"], a["rationale"])
        rows.append(_row("awareness", f"aw:{a['aug_id']}", seg, prompt, target, cfg, op=a["op"]))
    n_aw = len(rows)
    covered = {r["segment_id"] for r in rows}
    pool = sorted((s for s in segments.values() if s.get("split") != "held_out" and s["segment_id"] not in covered),
                  key=lambda s: s["segment_id"])
    random.Random(cfg.seed).shuffle(pool)
    n_cs = min(len(pool), max(round(cfg.cold_start_ratio * n_aw), cfg.cold_start_min))
    for seg in pool[:n_cs]:
        target = policy_prompts.format_policy_target(_calls_text(seg["target_calls"]))
        prompt = build_prompt(seg, awareness=False, docs_style=docs_style)  # the plain prompt asks for this bare answer
        rows.append(_row("cold_start", f"cs:{seg['segment_id']}", seg, prompt, target, cfg))
    if cfg.turn_ends:
        ends = turn_end_examples(segments.values(), {r["trajectory_id"] for r in rows}, True, docs_style, cfg, taught)
        rows += _fewer_ends(ends, rows, segments, cfg)
    kinds = Counter(r["kind"] for r in rows)
    stats = {"rows": len(rows), "awareness": kinds["awareness"], "cold_start": kinds["cold_start"],
             "turn_end": kinds["turn_end"], "rejects": len(rejects), "by_split": dict(Counter(r["split"] for r in rows))}
    return pa.Table.from_pylist(rows, schema=SFT_EXAMPLES), rejects, stats
