"""Stage ``segment`` (Eq. 7): every assistant step that is a function call becomes
τ' = (info_meta, c_his, q, a_fc, c_fut). Message-only steps (replies, turns without calls) are
not segments but stay in the contexts.

Context layout, as messages ``{role, content}``:
* ``history`` (c_his): all earlier turns (user query, assistant calls as canonical call text,
  tool observations, assistant reply);
* ``query`` (q): the current turn's user query;
* ``prior_steps``: the current turn's earlier steps (assistant calls + their observations);
* ``target_calls`` (a_fc): this step's calls;
* ``future`` (c_fut): this step's observations, the rest of the turn and all later turns.

``segment_id = "<trajectory_id>#t<turn>s<step>"``: stable across runs.
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa

from progra_core import versioning
from progra_core.config import SegmentConfig
from progra_core.schemas import MESSAGE, SEGMENTS, reject

__all__ = ["STAGE", "CODE_VERSION", "SEGMENTS", "MESSAGE", "segment_trajectory", "segment", "tools_at_turn"]

STAGE = "segment"
CODE_VERSION = versioning.code_version("1", __name__)



def _calls_text(calls: list[dict]) -> str:
    return "[" + ", ".join(c["text"] for c in calls) + "]"


def _action_messages(action: dict, with_obs: bool) -> list[dict]:
    msgs = [{"role": "assistant", "content": _calls_text(action["calls"])}]
    if with_obs:
        msgs += [{"role": "tool", "content": o} for o in action["observations"]]
    return msgs


def _turn_messages(turn: dict, with_obs: bool) -> list[dict]:
    msgs = [{"role": "user", "content": turn["query"] or ""}]
    for a in turn["actions"] or []:
        msgs += _action_messages(a, with_obs)
    if turn.get("reply"):
        msgs.append({"role": "assistant", "content": turn["reply"]})
    return msgs


def tools_at_turn(tools_json: str | None, turns: list[dict], turn_index: int) -> str:
    """Docs available at a turn: functions a later turn adds (miss_func) are withheld."""
    if not tools_json:
        return "[]"
    later = {n for t in turns[turn_index + 1:] for n in (t.get("tools_added") or [])}
    if not later:
        return tools_json
    docs = json.loads(tools_json)
    return json.dumps([d for d in docs if (d.get("function", d)).get("name") not in later])


def segment_trajectory(traj: dict, cfg: SegmentConfig) -> list[dict]:
    turns = traj["turns"] or []
    obs = cfg.include_observations
    out = []
    for i, turn in enumerate(turns):
        history = [m for t in turns[:i] for m in _turn_messages(t, obs)]
        actions = turn["actions"] or []
        tools = tools_at_turn(traj.get("tools"), turns, i)
        for j, action in enumerate(actions):
            if not action["calls"]:
                continue
            prior = [m for a in actions[:j] for m in _action_messages(a, obs)]
            future = [{"role": "tool", "content": o} for o in action["observations"]] if obs else []
            future += [m for a in actions[j + 1:] for m in _action_messages(a, obs)]
            if turn.get("reply"):
                future.append({"role": "assistant", "content": turn["reply"]})
            future += [m for t in turns[i + 1:] for m in _turn_messages(t, obs)]
            out.append({
                "segment_id": f"{traj['trajectory_id']}#t{i}s{j}",
                "trajectory_id": traj["trajectory_id"],
                "source": traj.get("source"),
                "split": traj.get("split"),
                "env": traj.get("env"),
                "involved_classes": traj.get("involved_classes") or [],
                "turn_index": i,
                "step_index": j,
                "tools": tools,
                "scenario": traj.get("scenario") or "",
                "history": history,
                "query": turn["query"] or "",
                "prior_steps": prior,
                "target_calls": action["calls"],
                "future": future,
            })
    return out


def segment(trajectories: pa.Table, cfg: SegmentConfig) -> tuple[pa.Table, list[dict], dict]:
    rows, rejects = [], []
    for traj in trajectories.to_pylist():
        try:
            segs = segment_trajectory(traj, cfg)
        except Exception as e:  # malformed row: quarantine, keep going
            rejects.append(reject(STAGE, traj.get("trajectory_id"), "bad_trajectory", f"{type(e).__name__}: {e}"))
            continue
        if not segs:
            rejects.append(reject(STAGE, traj.get("trajectory_id"), "no_call_steps", "trajectory has no function-call step"))
        rows += segs
    stats = {"rows_in": trajectories.num_rows, "rows": len(rows), "rejects": len(rejects),
             "rejects_by_reason": dict(Counter(r["reason"] for r in rejects))}
    return pa.Table.from_pylist(rows, schema=SEGMENTS), rejects, stats
