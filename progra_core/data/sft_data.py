"""Stage ``sft_data``: D_sft = D_aug ∪ D_cs as chat examples TRL consumes directly.

* awareness examples (one per augmented row): prompt = system (instructions + tools) + the
  conversation so far + the current query (+ this turn's earlier steps), or the augmented
  example's own inputs; target = ``<summary>S^a</summary><think>rationale</think><answer>[calls]</answer>``
  (Fig. 10);
* cold-start examples (D_cs): the same prompt for segments of D, target = only the well-formed
  ``<answer>[calls]</answer>``; ``cold_start_ratio`` per awareness example, at least
  ``cold_start_min``;
* turn-end examples (``turn_ends``): for every turn of the trajectories above, the prompt after the
  turn's last call and its result, target = a plain answer (the turn's reply, or ``TURN_DONE``),
  in the format of the rows its trajectory gave: with a summary where it has awareness rows,
  the answer alone where it is cold start only. BFCL and synthesized turns carry no reply, so
  without these the policy is never shown how a turn ends, and in BFCL a turn ends only on an
  answer without calls. (The format must match: when every turn end opens with ``<summary>``
  and every cold-start call with ``<answer>``, the first token decides "call or end", and a
  model trained mostly on cold start never ends a turn — measured: 0 of 8 held-out turn ends.)

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
from progra_core.config import SFTDataConfig
from progra_core.prompts import policy as policy_prompts
from progra_core.prompts.policy import build_prompt
from progra_core.prompts.tools import DocStyle
from progra_core.schemas import SFT_EXAMPLES, reject

__all__ = ["STAGE", "CODE_VERSION", "SFT_EXAMPLES", "sft_data", "split_for", "turn_end_examples"]

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


def turn_end_examples(segments: Iterable[dict], trajectories: set[str] | None, awareness: bool, docs_style: DocStyle,
                      cfg: SFTDataConfig, summarize: bool | None = None) -> list[dict]:
    """One example per turn (of ``trajectories``, or all): the prompt after the turn's last call
    and its results (the PAG system prompt when ``awareness``), the target a plain answer, with
    a summary before it when ``summarize`` (default: ``awareness``). Held-out scenarios never enter."""
    summarize = awareness if summarize is None else summarize
    last: dict[tuple[str, int], dict] = {}
    turn_calls: dict[tuple[str, int], list[dict]] = {}
    for seg in segments:
        if seg.get("split") == "held_out" or (trajectories is not None and seg["trajectory_id"] not in trajectories):
            continue
        key = (seg["trajectory_id"], seg["turn_index"])
        turn_calls.setdefault(key, []).extend(seg["target_calls"])
        if key not in last or seg["step_index"] > last[key]["step_index"]:
            last[key] = seg
    out = []
    for key in sorted(last):
        seg = last[key]
        results, reply = _closing(seg)
        prompt = build_prompt(seg, awareness=awareness, docs_style=docs_style)
        prompt += [{"role": "assistant", "content": _calls_text(seg["target_calls"])}, *results]
        target = policy_prompts.format_turn_end(reply, seg["query"] if summarize else None, turn_calls[key])
        out.append(_row("turn_end", f"end:{seg['trajectory_id']}#t{seg['turn_index']}", seg, prompt, target, cfg))
    return out


def sft_data(augmented: list[dict], segments: dict[str, dict], cfg: SFTDataConfig,
             docs_style: DocStyle = "json") -> tuple[pa.Table, list[dict], dict]:
    """``augmented``: augmented rows; ``segments``: segment_id -> segment row (all of D's segments)."""
    rows, rejects = [], []
    for a in augmented:
        seg = segments.get(a["segment_id"])
        if seg is None:
            rejects.append(reject(STAGE, a["aug_id"], "missing_segment", f"segment {a['segment_id']} not found"))
            continue
        if seg.get("split") == "held_out":
            continue
        context = {k: a.get(k) for k in ("history", "query", "prior_steps")}  # the augmented inputs, where changed
        prompt = build_prompt(seg, a["tools"], docs_style=docs_style, context=context)
        target = policy_prompts.format_policy_target(_calls_text(a["target_calls"]), a["summary"] or a["text"], a["plan"], a["rationale"])
        rows.append(_row("awareness", f"aw:{a['aug_id']}", seg, prompt, target, cfg, op=a["op"]))
    n_aw = len(rows)
    pool = sorted((s for s in segments.values() if s.get("split") != "held_out"), key=lambda s: s["segment_id"])
    random.Random(cfg.seed).shuffle(pool)
    n_cs = min(len(pool), max(round(cfg.cold_start_ratio * n_aw), cfg.cold_start_min))
    for seg in pool[:n_cs]:
        target = policy_prompts.format_policy_target(_calls_text(seg["target_calls"]))
        rows.append(_row("cold_start", f"cs:{seg['segment_id']}", seg, build_prompt(seg, docs_style=docs_style), target, cfg))
    if cfg.turn_ends:
        aware = {r["trajectory_id"] for r in rows if r["kind"] == "awareness"}
        cold = {r["trajectory_id"] for r in rows} - aware
        rows += turn_end_examples(segments.values(), aware, True, docs_style, cfg)
        rows += turn_end_examples(segments.values(), cold, True, docs_style, cfg, summarize=False)
    kinds = Counter(r["kind"] for r in rows)
    stats = {"rows": len(rows), "awareness": kinds["awareness"], "cold_start": kinds["cold_start"],
             "turn_end": kinds["turn_end"], "rejects": len(rejects), "by_split": dict(Counter(r["split"] for r in rows))}
    return pa.Table.from_pylist(rows, schema=SFT_EXAMPLES), rejects, stats
