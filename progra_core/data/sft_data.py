"""Stage ``sft_data``: D_sft = D_aug ∪ D_cs as chat examples TRL consumes directly.

* awareness examples (one per augmented row): prompt = system (instructions + tools) + the
  conversation so far + the current query (+ this turn's earlier steps); target =
  ``<summary>S^a</summary><think>rationale</think><answer>[calls]</answer>`` (Fig. 10);
* cold-start examples (D_cs): the same prompt for segments of D, target = only the well-formed
  ``<answer>[calls]</answer>``; ``cold_start_ratio`` per awareness example, at least
  ``cold_start_min``.

Rows store ``messages`` (prompt + completion), and ``prompt`` / ``completion`` separately, so
TRL can train on completions only. The train/validation split is by trajectory (hash of its id),
so no trajectory contributes to both sides. Held-out BFCL scenarios never enter.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
from collections import Counter

import pyarrow as pa

from progra_core import versioning
from progra_core.config import SFTDataConfig
from progra_core.prompts import policy as policy_prompts
from progra_core.prompts import tools as prompt_tools
from progra_core.schemas import SFT_EXAMPLES, reject

__all__ = ["STAGE", "CODE_VERSION", "SFT_EXAMPLES", "build_prompt", "sft_data", "split_for"]

STAGE = "sft_data"
CODE_VERSION = versioning.code_version("1", sys.modules[__name__], policy_prompts, prompt_tools)



def split_for(trajectory_id: str, validation_percent: int, seed: int) -> str:
    h = int(hashlib.sha256(f"{seed}:{trajectory_id}".encode()).hexdigest()[:8], 16) % 100
    return "validation" if h < validation_percent else "train"


def _renamed(messages: list[dict], renames: dict[str, str]) -> list[dict]:
    """Apply a schema_perturb rename (new -> old) to the calls in the history, for coherence."""
    if not renames:
        return messages
    out = []
    for m in messages:
        c = m["content"] or ""
        if m["role"] == "assistant":
            for new, old in renames.items():
                c = re.sub(r"(?<![\w.])" + re.escape(old) + r"(?=\s*\()", new, c)
        out.append({"role": m["role"], "content": c})
    return out


def build_prompt(seg: dict, tools_json: str | None = None, renames: dict[str, str] | None = None,
                 awareness: bool = True) -> list[dict]:
    """The raw-prefix prompt of a segment: info_meta, c_his, q and this turn's earlier steps."""
    system = policy_prompts.policy_system(tools_json if tools_json is not None else seg["tools"], seg.get("scenario"),
                                          awareness=awareness)
    msgs = [{"role": "system", "content": system}]
    msgs += _renamed(list(seg.get("history") or []), renames or {})
    msgs.append({"role": "user", "content": seg["query"]})
    msgs += _renamed(list(seg.get("prior_steps") or []), renames or {})
    return msgs


def _calls_text(records: list[dict]) -> str:
    return "[" + ", ".join(c["text"] for c in records) + "]"


def sft_data(augmented: list[dict], segments: dict[str, dict], cfg: SFTDataConfig) -> tuple[pa.Table, list[dict], dict]:
    """``augmented``: augmented rows; ``segments``: segment_id -> segment row (all of D's segments)."""
    rows, rejects = [], []
    for a in augmented:
        seg = segments.get(a["segment_id"])
        if seg is None:
            rejects.append(reject(STAGE, a["aug_id"], "missing_segment", f"segment {a['segment_id']} not found"))
            continue
        if seg.get("split") == "held_out":
            continue
        renames = (json.loads(a["mapping"]).get("functions") if a.get("mapping") else None) or {}
        prompt = build_prompt(seg, a["tools"], renames)
        target = policy_prompts.format_policy_target(_calls_text(a["target_calls"]), a["summary"] or a["text"], a["plan"], a["rationale"])
        completion = [{"role": "assistant", "content": target}]
        rows.append({"example_id": f"aw:{a['aug_id']}", "kind": "awareness", "op": a["op"], "segment_id": seg["segment_id"],
                     "trajectory_id": seg["trajectory_id"], "messages": prompt + completion, "prompt": prompt,
                     "completion": completion, "split": split_for(seg["trajectory_id"], cfg.validation_percent, cfg.seed)})
    n_aw = len(rows)
    pool = sorted((s for s in segments.values() if s.get("split") != "held_out"), key=lambda s: s["segment_id"])
    random.Random(cfg.seed).shuffle(pool)
    n_cs = min(len(pool), max(round(cfg.cold_start_ratio * n_aw), cfg.cold_start_min))
    for seg in pool[:n_cs]:
        prompt = build_prompt(seg)
        completion = [{"role": "assistant", "content": policy_prompts.format_policy_target(_calls_text(seg["target_calls"]))}]
        rows.append({"example_id": f"cs:{seg['segment_id']}", "kind": "cold_start", "op": None, "segment_id": seg["segment_id"],
                     "trajectory_id": seg["trajectory_id"], "messages": prompt + completion, "prompt": prompt,
                     "completion": completion, "split": split_for(seg["trajectory_id"], cfg.validation_percent, cfg.seed)})
    stats = {"rows": len(rows), "awareness": n_aw, "cold_start": len(rows) - n_aw, "rejects": len(rejects),
             "by_split": dict(Counter(r["split"] for r in rows))}
    return pa.Table.from_pylist(rows, schema=SFT_EXAMPLES), rejects, stats
