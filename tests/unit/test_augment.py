"""Augmentation (Eq. 11): which op a row gets, schema_perturb's renames and values (consistent in
prompt, docs and target, and mapped back to calls the env executes), and word_mask (inputs only,
never the target), through the stage's own shard function and SFT rows."""

import json
import random

import pytest

from progra_core.calls import Call
from progra_core.config import AugmentConfig, SegmentConfig, SFTDataConfig
from progra_core.data.augment import choose_op, map_back, schema_perturb, word_mask
from progra_core.envs.bfcl import BFCLEnv
from progra_core.prompts.policy import parse_action
from tests.support import sort_trajectory


def test_op_choice_is_seeded_per_id():
    cfg = AugmentConfig(weights={"paraphrase": 1, "schema_perturb": 1, "word_mask": 1})
    ops = [choose_op(f"id{i}", cfg) for i in range(60)]
    assert ops == [choose_op(f"id{i}", cfg) for i in range(60)] and set(ops) == {"paraphrase", "schema_perturb", "word_mask"}
    assert choose_op("x", AugmentConfig(weights={"paraphrase": 0, "schema_perturb": 0, "word_mask": 1})) == "word_mask"


def test_schema_perturb_is_consistent_and_maps_back_to_executable_calls():
    env = BFCLEnv({"GorillaFileSystem": {"root": {"w": {"type": "directory", "contents": {
        "report.txt": {"type": "file", "content": "b\na"}}}}}}, ["GorillaFileSystem"])
    tools = json.dumps(env.tools())
    target = [Call("sort", {"file_name": "report.txt"})]
    text = "<summary>The user wants report.txt sorted.</summary><plan>Call sort on report.txt.</plan><rationale>r</rationale>"
    context = {"history": [{"role": "assistant", "content": "[sort(file_name='report.txt')]"}],
               "query": "Sort report.txt again.", "prior_steps": []}
    out = schema_perturb(text, tools, target, random.Random(0), context)
    assert out is not None
    new_text, new_tools, calls, mapping, new_context = out
    assert new_context["history"][0]["content"].startswith("[sort_lines(")  # the inputs follow the rename
    assert mapping["functions"] == {"sort_lines": "sort"}
    assert "sort_lines" in new_text and "sort_lines" in [d["name"] for d in json.loads(new_tools)]
    assert calls[0].name == "sort_lines" and "sort" not in [d["name"] for d in json.loads(new_tools)]
    for v in mapping["values"]:
        assert str(v["new"]) in new_text and str(v["old"]) not in new_text and calls[0].args[v["param"]] == v["new"]
    obs = env.execute(map_back(calls, mapping))
    assert "is not defined" not in obs[0] and "unexpected keyword" not in obs[0]


def test_word_mask_masks_the_inputs():
    tools = json.dumps([{"name": "sort", "parameters": {"properties": {"file_name": {}}}}])
    context = {"history": [{"role": "user", "content": "sort the file_name report"}, {"role": "assistant", "content": "[sort()]"}],
               "query": "then sort again; sort", "prior_steps": []}
    out, k = word_mask(context, tools, 0.5, random.Random(1))
    masked = [m["content"] for m in out["history"]] + [out["query"]]
    assert k == 3 and sum(t.count("[MASK]") for t in masked) == 3  # half of the 5 mentions, rounded up
    assert [m["role"] for m in out["history"]] == ["user", "assistant"]
    assert word_mask({"history": [], "query": "nothing related", "prior_steps": []}, tools, 0.5, random.Random(1)) is None


def _augmented(op: str, seed: int):
    import pyarrow as pa

    from progra_core.data import segment as seg
    from progra_core.data.augment import augment_items, augment_shard, split_outcomes
    from progra_core.data.sft_data import sft_data
    from progra_core.schemas import AWARENESS, SEGMENTS, VERIFIED

    segs = seg.segment_trajectory(sort_trajectory(), SegmentConfig())
    target = segs[1]
    text = ("<summary>The user is in workspace and wants report.txt sorted; cd with folder = 'workspace' worked.</summary>"
            "<plan>Call sort on report.txt.</plan><rationale>The file is named.</rationale>")
    aw = {"awareness_id": "a1", "segment_id": target["segment_id"], "generator": "g", "prompt_version": "v2", "text": text,
          "summary": "The user is in workspace and wants report.txt sorted; cd with folder = 'workspace' worked.",
          "plan": "Call sort on report.txt.", "rationale": "The file is named.", "attempts": 1, "retries": 0,
          "latency_ms": 0.0, "prompt_tokens": 0, "completion_tokens": 0, "created_at": None}
    ver = {"awareness_id": "a1", "segment_id": target["segment_id"], "verifier": "v", "predicted_calls": [],
           "predicted_text": "", "equal": True, "reason": "ok", "latency_ms": 0.0, "prompt_tokens": 0, "completion_tokens": 0}
    items = augment_items(pa.Table.from_pylist([ver], schema=VERIFIED), pa.Table.from_pylist([aw], schema=AWARENESS),
                          pa.Table.from_pylist(segs, schema=SEGMENTS))
    cfg = AugmentConfig(weights={op: 1.0}, seed=seed, mask_fraction=0.5)
    rows, rejects, _ = split_outcomes(augment_shard(items, None, "rule", cfg))
    table, _, _ = sft_data(rows.to_pylist(), {s["segment_id"]: s for s in segs},
                           SFTDataConfig(cold_start_min=0, cold_start_ratio=0, validation_percent=0))
    by_op = {r["op"]: r for r in table.to_pylist() if r["kind"] == "awareness"}
    return by_op, rows.to_pylist()


@pytest.mark.parametrize("seed", range(6))
def test_schema_perturb_values_are_grounded_in_their_own_prompt(seed):
    by_op, rows = _augmented("schema_perturb", seed)
    mapping = json.loads(next(r for r in rows if r["op"] == "schema_perturb")["mapping"])
    orig, pert = by_op["none"], by_op["schema_perturb"]
    target = parse_action(pert["completion"][0]["content"]).calls
    for v in mapping["values"]:
        old, new = str(v["old"]), str(v["new"])
        assert target[v["call"]].args[v["param"]] == v["new"]
        for a, b in zip(orig["prompt"][1:], pert["prompt"][1:], strict=True):  # every message but the system prompt
            assert b["content"].count(new) == a["content"].count(old) + a["content"].count(new), (old, new, b["content"])
            assert old not in b["content"].replace(new, "")
    for new_name in mapping["functions"]:  # a renamed function is what the prompt's docs list
        assert new_name in pert["prompt"][0]["content"] and new_name == target[0].name


def test_word_mask_masks_inputs_never_the_target():
    by_op, rows = _augmented("word_mask", 0)
    masked = by_op["word_mask"]
    assert "[MASK]" not in masked["completion"][0]["content"]
    assert any("[MASK]" in m["content"] for m in masked["prompt"][1:])
    assert masked["completion"] == by_op["none"]["completion"]
