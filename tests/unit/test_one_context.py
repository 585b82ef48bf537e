"""One context for SFT and PAG-RL: the prompt a rollout shows at each step is, token for token,
the prompt the SFT row for that step shows (both from ``policy.turn_messages``), when the policy
writes what SFT taught it; and TEMPLATE accepts every SFT target, turn ends included."""

from __future__ import annotations

import pytest

from progra_core.config import GRPOConfig, IngestConfig, SegmentConfig, SFTDataConfig
from progra_core.data.awareness import template_awareness
from progra_core.data.ingest import ingest
from progra_core.data.segment import segment
from progra_core.data.sft_data import sft_data
from progra_core.prompts.policy import template_ok
from progra_core.train.rewards import Rubric
from progra_core.train.rollout import episodes_from_trajectories, run_episodes


@pytest.fixture(scope="module")
def data():
    """Three BFCL train trajectories, one step per user turn, every segment with template awareness."""
    table, _, _ = ingest(IngestConfig(bfcl_categories=["base"], bfcl_split="train", limit=3, step_mode="per_turn"))
    trajectories = [t for t in table.to_pylist() if t["n_turns"] >= 2][:2]
    segs, _, _ = segment(table, SegmentConfig())
    segs = [s for s in segs.to_pylist() if s["trajectory_id"] in {t["trajectory_id"] for t in trajectories}]
    augmented = []
    for s in segs:
        summary, plan, rationale = template_awareness(s)
        augmented.append({"aug_id": s["segment_id"], "awareness_id": s["segment_id"], "segment_id": s["segment_id"],
                          "op": "none", "text": summary, "summary": summary, "plan": plan, "rationale": rationale,
                          "tools": s["tools"], "target_calls": s["target_calls"], "history": None, "query": None,
                          "prior_steps": None})
    rows, _, _ = sft_data(augmented, {s["segment_id"]: s for s in segs}, SFTDataConfig(validation_percent=0, cold_start_min=0),
                          docs_style="compact")
    return trajectories, segs, rows.to_pylist()


def _ids(tok, messages: list[dict]) -> list[int]:
    return tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]


def test_rollout_contexts_are_the_sft_prompts_token_for_token(tok, data):
    trajectories, segs, rows = data
    by_step = {}
    for r in rows:  # (trajectory, turn, call|end) -> the SFT row of that step
        turn = int(r["segment_id"].split("#t")[1].split("s")[0])
        by_step[(r["trajectory_id"], turn, r["kind"])] = r
    assert {k[2] for k in by_step} == {"awareness", "turn_end"}
    episodes, rejects = episodes_from_trajectories(trajectories)
    assert not rejects and len(episodes) == 2

    seen: dict[str, list[list[int]]] = {ep.episode_id: [] for ep in episodes}
    turn = {ep.episode_id: [0, "awareness"] for ep in episodes}
    order = [ep.episode_id for ep in episodes]

    def generate(contexts):
        out = []
        live = [e for e in order if turn[e][0] is not None]
        for ep_id, ctx in zip(live, contexts, strict=True):
            t, kind = turn[ep_id]
            seen[ep_id].append(list(ctx))
            row = by_step[(ep_id, t, kind)]
            out.append(tok(row["completion"][0]["content"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
            n_turns = max(k[1] for k in by_step if k[0] == ep_id) + 1
            turn[ep_id] = [t, "turn_end"] if kind == "awareness" else ([t + 1, "awareness"] if t + 1 < n_turns else [None, None])
        return out

    rollouts = run_episodes(episodes, generate, tok, "awareness", Rubric.from_config(GRPOConfig()), max_actions=20,
                            max_turn_actions=3, docs_style="compact")
    for ep, ro in zip(episodes, rollouts, strict=True):
        steps = [(t, k) for t in range(len(ep.turns)) for k in ("awareness", "turn_end")]
        assert len(seen[ep.episode_id]) == len(steps) == len(ro.actions)
        for ctx, (t, k) in zip(seen[ep.episode_id], steps, strict=True):
            want = _ids(tok, by_step[(ep.episode_id, t, k)]["prompt"])
            assert ctx == want, f"{ep.episode_id} turn {t} {k}: rollout and SFT contexts differ"
        # the policy that writes what SFT taught passes every turn, closes each itself, and TEMPLATE pays every step
        assert ro.turns_passed == [True] * len(ep.turns)
        assert all(a["terms"]["fmt"] > 0 or not a["turn_end"] for a in ro.actions) and ro.returns["fmt"] > 0


def test_template_accepts_every_sft_target(data):
    _, _, rows = data
    for r in rows:
        assert template_ok(r["completion"][0]["content"], awareness=True), (r["kind"], r["completion"][0]["content"][:200])


def test_template_awareness_is_a_note_not_a_call_and_costs_nothing(data):
    """The template writer's notes pass the parser the LLM notes pass (no call syntax, both
    sections), name a_fc's function and values in words, and carry the earlier turns' progress."""
    from progra_core.config import AwarenessConfig
    from progra_core.data.awareness import _template_rows, parse_awareness, tool_names

    _, segs, _ = data
    table = _template_rows(segs, AwarenessConfig(generator="template"))
    rows = table.to_pylist()
    assert len(rows) == len(segs) and all(r["generator"] == "template" and r["prompt_tokens"] == 0 for r in rows)
    for seg, row in zip(segs, rows, strict=True):
        summary, plan, _ = parse_awareness(row["text"], tool_names(seg["tools"]))
        for c in seg["target_calls"]:
            assert c["name"] in plan
        if seg["turn_index"] > 0:
            assert "The user asked:" in summary  # the earlier turns' progress note
        assert seg["query"].split()[0] in summary


def test_next_call_cases_follow_the_step_mode_and_the_training_layout():
    """Symptom: next-call cases were cut per call whatever ingest.step_mode said, and shown the raw
    conversation while PAG SFT rows and rollouts show the awareness layout."""
    from progra_core.config import EvaluateConfig
    from progra_core.evaluation.next_call import next_call_cases
    from progra_core.sources import bfcl

    ev = EvaluateConfig(next_call_limit=400)
    per_call = [c for c in next_call_cases(ev, 50, True, "compact", "per_call") if c["kind"] == "call"]
    per_turn = [c for c in next_call_cases(ev, 50, True, "compact", "per_turn") if c["kind"] == "call"]
    assert all(c["case_id"].endswith("s0") for c in per_turn) and len(per_turn) < len(per_call)
    entries = {e["id"]: e for e in bfcl.select_entries(["base"], "held_out", 50)}
    for c in per_turn:  # one case per turn, its target every call of the turn
        tid, t = c["case_id"].split("#t")
        traj = bfcl.entry_to_trajectory(entries[tid.removeprefix("bfcl:")], step_mode="per_call")
        turn = traj["turns"][int(t.split("s")[0])]
        assert [x["text"] for x in c["target"]] == [x["text"] for a in turn["actions"] for x in a["calls"]]
        assert len(c["prompt"]) == 2 and c["prompt"][1]["role"] == "user"  # system + progress/request: no raw history
    later = [c for c in per_turn if not c["case_id"].endswith("#t0s0")]
    assert later and all(c["prompt"][1]["content"].startswith("Progress so far") for c in later)
