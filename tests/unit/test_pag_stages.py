"""Pure logic of the PAG stages (segment, awareness parsing, verification, SFT data, resumable
shards; augmentation: test_augment.py). The flow-level tests are in tests/integration/test_data_flow.py."""

import json

import pyarrow as pa
import pytest

from progra_core.calls import Call, calls_to_records, parse_calls
from progra_core.config import SegmentConfig, SFTDataConfig
from progra_core.data import segment as seg
from progra_core.data.awareness import AwarenessParseError, parse_awareness, select_segments
from progra_core.data.sft_data import sft_data
from progra_core.data.verify import rebuilt_equal
from progra_core.envs.bfcl import BFCLEnv
from progra_core.sharding import MemoryShards, StageIncomplete, run_sharded
from progra_core.sources.bfcl import entry_to_trajectory, load_entries


def _traj():
    def act(text, obs):
        return {"calls": calls_to_records(parse_calls(text)), "observations": obs}
    return {"trajectory_id": "t", "source": "x", "split": "train", "env": "bfcl", "involved_classes": ["GorillaFileSystem"],
            "tools": json.dumps([{"name": "ls"}, {"name": "cd"}, {"name": "sort"}]), "scenario": "fs",
            "turns": [
                {"query": "q0", "actions": [act("[cd(folder='a')]", ["ok"]), act("[ls()]", ["x"])], "reply": "done", "tools_added": []},
                {"query": "q1", "actions": [], "reply": "need more info", "tools_added": []},
                {"query": "q2", "actions": [act("[sort(file_name='x')]", ["s"])], "reply": None, "tools_added": ["sort"]},
            ]}


def test_segmentation_counts_and_boundaries():
    rows = seg.segment_trajectory(_traj(), SegmentConfig())
    assert [r["segment_id"] for r in rows] == ["t#t0s0", "t#t0s1", "t#t2s0"]  # message-only turn skipped
    s0, s1, s2 = rows
    assert s0["history"] == [] and s0["prior_steps"] == [] and s0["query"] == "q0"
    assert s1["prior_steps"] == [{"role": "assistant", "content": "[cd(folder='a')]"}, {"role": "tool", "content": "ok"}]
    assert s1["future"][0] == {"role": "tool", "content": "x"} and {"role": "user", "content": "q2"} in s1["future"]
    assert s2["history"][-2:] == [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "need more info"}]
    assert s2["future"] == [{"role": "tool", "content": "s"}]
    assert "sort" not in [d["name"] for d in json.loads(s0["tools"])]  # withheld until turn 2 (miss_func)
    assert "sort" in [d["name"] for d in json.loads(s2["tools"])]
    table, rejects, stats = seg.segment(pa.Table.from_pylist([_traj()]), SegmentConfig())
    assert table.num_rows == 3 and rejects == [] and table.schema == seg.SEGMENTS


def test_segments_of_a_real_bfcl_entry():
    row = entry_to_trajectory(load_entries("base", ids=["multi_turn_base_0"])[0])
    rows = seg.segment_trajectory(row, SegmentConfig())
    assert len(rows) == row["n_calls"]


def test_awareness_parsing():
    S, P = "The user wants a file sorted", "Sort the report next"
    assert parse_awareness(f"<summary>{S}</summary><plan>{P}</plan><rationale>r</rationale>") == (S, P, "r")
    assert parse_awareness(f"Summary: {S}\nPlan: {P}") == (S, P, "")
    echo = "<rationale>one or two sentences linking the summary to the plan</rationale>"
    assert parse_awareness(f"<summary>{S}</summary><plan>{P}</plan>{echo}") == (S, P, "")  # optional echo dropped
    for text, reason in [("", "empty"), ("just text", "no_sections"), ("<summary>s</summary>", "no_sections"),
                         ("<summary>the user wants files listed</summary><plan>run ls(a=True) now</plan>", "contains_function_call"),
                         ("<summary>the user wants files listed</summary><plan>do [x(a=1)] and then finish</plan>", "contains_function_call"),
                         ("Answer with the sections <summary>, <plan> and <rationale>, in plain words.", "empty_sections"),
                         ("<summary>goal, confirmed parameters, calls so far and the current state</summary>"
                          "<plan>Sort the report next</plan>", "template_echo"),
                         ("<summary>The user wants a file sorted</summary><plan>The next steps, in order:</plan>", "template_echo"),
                         ("<summary>goal, confirmed parameters, calls so far, cwd, cwd, cwd, cwd</summary>"
                          "<plan>Sort the report next</plan>", "template_echo")]:
        with pytest.raises(AwarenessParseError) as e:
            parse_awareness(text, ["ls"])
        assert e.value.reason == reason


class ScriptedGateway:
    """Answers each awareness request from a script per segment id; records what it was asked."""

    def __init__(self, script: dict[str, list[str]]):
        self.script = {k: list(v) for k, v in script.items()}
        self.asked: list = []

    def batch(self, reqs):
        from progra_core.llm import ChatResult

        self.asked.extend(reqs)
        return [ChatResult(self.script[r.id].pop(0), r.model, r.role, r.id, prompt_tokens=10, completion_tokens=5) for r in reqs]


def test_awareness_retries_bad_output_with_the_reason_then_rejects():
    from progra_core.config import AwarenessConfig
    from progra_core.data.awareness import annotate

    rows = seg.segment_trajectory(_traj(), SegmentConfig())
    good = "<summary>The user wants to enter folder a and list it</summary><plan>Change into a, then list files</plan>"
    gw = ScriptedGateway({rows[0]["segment_id"]: ["no sections here", good],
                          rows[1]["segment_id"]: ["<summary>the user wants the files listed</summary><plan>call ls() now please</plan>"] * 2,
                          rows[2]["segment_id"]: [good]})
    out = annotate(rows, gw, "openai/x", AwarenessConfig(max_attempts=2, guided=False)).to_pylist()
    by = {r["segment_id"]: r for r in out}
    first, second, third = (by[r["segment_id"]] for r in rows)
    assert first["reject_reason"] is None and first["attempts"] == 2 and first["summary"].startswith("The user wants")
    assert second["reject_reason"] == "contains_function_call" and second["attempts"] == 2
    assert third["reject_reason"] is None and third["attempts"] == 1
    assert len(gw.asked) == 5
    retry = [r for r in gw.asked if r.id == rows[0]["segment_id"]][1]
    assert retry.messages[-2] == {"role": "assistant", "content": "no sections here"}
    assert "missing summary and plan" in retry.messages[-1]["content"]  # the reason is fed back
    prompt = gw.asked[0].messages[-1]["content"]
    assert "cd with folder = 'a'" in prompt and "cd(" not in prompt.split("Next action taken:")[1]  # a_fc in words


def test_select_segments_shortest():
    rows = seg.segment_trajectory(_traj(), SegmentConfig())
    assert [r["segment_id"] for r in select_segments(rows, 1, "shortest")] == ["t#t0s0"]
    assert len(select_segments(rows, None)) == 3


def test_verification_decisions():
    env = BFCLEnv({}, ["GorillaFileSystem"])
    target = [Call("sort", {"file_name": "a.txt"})]
    assert rebuilt_equal("[sort(file_name='a.txt')]", target, env.resolve)[1:] == (True, "ok")
    assert rebuilt_equal("<answer>[sort('a.txt')]</answer>", target, env.resolve)[1:] == (True, "ok")
    assert rebuilt_equal("[sort(file_name='b.txt')]", target, env.resolve)[1:] == (False, "mismatch")
    assert rebuilt_equal("[sort(file_name=", target)[1:] == (False, "parse_error")
    assert rebuilt_equal("  ", target)[1:] == (False, "empty")
    assert rebuilt_equal("[]", target)[1:] == (False, "empty")


def test_the_verifier_prompt_shows_a_plan_as_calls_without_naming_any_environment_function():
    """The worked example the verifier reads must be a call list ``judge`` accepts and must not
    name a BFCL function: it teaches the format, never an answer."""
    import re

    from progra_core.envs.bfcl import BFCL_CLASSES, function_docs
    from progra_core.prompts.awareness import verify_messages

    system = verify_messages("(tools)", "(scenario)", "<plan>call x</plan>")[0]["content"]
    example = next(line for line in system.splitlines() if line.startswith("["))
    calls = parse_calls(example)
    assert [c.name for c in calls] == ["open_door", "lock"]
    assert rebuilt_equal(example, calls)[1:] == (True, "ok")
    flat = re.sub(r"\s+", " ", system)
    assert "call open_door with door_id = 'A1', floor = 2; then lock with door_id = 'A1'" in flat  # the plan, in words
    known = {f["name"] for f in function_docs(list(BFCL_CLASSES))}
    assert len(known) > 100 and not {c.name for c in calls} & known


def test_sft_data_awareness_and_cold_start():
    segs = {r["segment_id"]: r for r in seg.segment_trajectory(_traj(), SegmentConfig())}
    aug = [{"aug_id": "a1", "segment_id": "t#t0s1", "op": "none", "text": "x", "summary": "S", "plan": "P", "rationale": "R",
            "tools": segs["t#t0s1"]["tools"], "target_calls": segs["t#t0s1"]["target_calls"], "mapping": None}]
    table, rejects, stats = sft_data(aug, segs, SFTDataConfig(cold_start_ratio=1.0, cold_start_min=2, validation_percent=0))
    rows = table.to_pylist()
    assert stats["awareness"] == 1 and stats["cold_start"] == 2 and rejects == []
    aw = rows[0]
    assert aw["completion"][0]["content"] == "<summary>S\nPlan: P</summary>\n<think>R</think>\n<answer>[ls()]</answer>"
    assert [m["role"] for m in aw["prompt"]] == ["system", "user", "assistant", "tool"]
    assert aw["messages"] == aw["prompt"] + aw["completion"]
    cs = [r for r in rows if r["kind"] == "cold_start"]
    assert all(r["completion"][0]["content"].startswith("<answer>[") for r in cs)
    assert {r["split"] for r in rows} == {"train"}
    ends = [r for r in rows if r["kind"] == "turn_end"]  # the trajectory has an awareness row: ends carry a summary
    assert ends and all(r["completion"][0]["content"].startswith("<summary>") and "The user asked:" in r["completion"][0]["content"]
                        for r in ends)
    last = ends[-1]["completion"][0]["content"]  # a third turn: the oldest is counted, the last two spelt out
    assert last.startswith("<summary>1 earlier request was completed. The user asked: q1") and "The user asked: q2" in last


def test_every_sft_target_has_the_format_its_own_prompt_asks_for():
    """Symptom: cold-start rows showed the PAG prompt (which asks for a summary, a think and an
    answer) with a bare ``<answer>``: the policy learnt two formats for one prompt and wrote the
    bare one on every held-out first step and rollout, so TEMPLATE paid nothing."""
    from progra_core.prompts.policy import policy_system, template_ok

    segs = {r["segment_id"]: r for r in seg.segment_trajectory(_traj(), SegmentConfig())}
    aug = [{"aug_id": "a1", "segment_id": "t#t0s1", "op": "none", "text": "x", "summary": "S", "plan": "P", "rationale": "R",
            "tools": segs["t#t0s1"]["tools"], "target_calls": segs["t#t0s1"]["target_calls"], "mapping": None}]
    rows = sft_data(aug, segs, SFTDataConfig(cold_start_ratio=2.0, cold_start_min=0, validation_percent=0), "compact")[0].to_pylist()
    assert {r["kind"] for r in rows} == {"awareness", "cold_start", "turn_end"}
    for r in rows:
        s = segs[r["segment_id"]]
        pag, plain = (policy_system(s["tools"], s["scenario"], "compact", aware) for aware in (True, False))
        system = r["prompt"][0]["content"]
        assert system in (pag, plain), r["kind"]
        assert template_ok(r["completion"][0]["content"], awareness=system == pag), (r["kind"], r["completion"][0]["content"])
        assert (system == pag) == (r["kind"] != "cold_start")
    end = next(r for r in rows if r["example_id"] == "end:t#t2")  # after a cold-start step: its note, as a note-writer shows it
    assert end["prompt"][-2]["content"].startswith("<summary>")


def test_turn_end_ratio_keeps_the_end_of_the_taught_turn_first():
    segs = {r["segment_id"]: r for r in seg.segment_trajectory(_traj(), SegmentConfig())}
    aug = [{"aug_id": "a1", "segment_id": "t#t2s0", "op": "none", "text": "x", "summary": "S", "plan": "P", "rationale": "R",
            "tools": segs["t#t2s0"]["tools"], "target_calls": segs["t#t2s0"]["target_calls"], "mapping": None}]

    def ends(ratio):
        cfg = SFTDataConfig(cold_start_ratio=0, cold_start_min=0, validation_percent=0, turn_end_ratio=ratio)
        return [r["example_id"] for r in sft_data(aug, segs, cfg)[0].to_pylist() if r["kind"] == "turn_end"]

    assert ends(None) == ["end:t#t0", "end:t#t2"]  # every turn of the trajectory used
    assert ends(1.0) == ["end:t#t2"]  # one call row: one end, the turn that row teaches (not the first by id)
    assert ends(0.0) == [] and ends(5.0) == ["end:t#t0", "end:t#t2"]


def test_sharded_work_resumes_without_redoing_finished_shards():
    items = [{"id": f"i{n:02d}"} for n in range(10)]
    seen = []

    def process(part, fail_after=None):
        seen.extend(p["id"] for p in part)
        if fail_after is not None and len(seen) > fail_after:
            raise RuntimeError("killed")
        return pa.table({"id": [p["id"] for p in part]})

    io = MemoryShards()
    with pytest.raises(StageIncomplete, match=r"2 of 4 shards \(4 of 10 items\) are unfinished: RuntimeError: killed") as e:
        run_sharded(items, "id", 3, lambda p: process(p, fail_after=6), io)
    assert isinstance(e.value.__cause__, RuntimeError)
    assert len(io.done()) == 2 and len(seen) == 9  # the failing shard was the last one started
    seen.clear()
    table, stats = run_sharded(items, "id", 3, process, io)
    assert sorted(table.column("id").to_pylist()) == [i["id"] for i in items]
    assert stats == {"shards": 4, "shards_reused": 2, "shards_computed": 2, "items_computed": 4} and len(seen) == 4


def test_awareness_tool_docs_used_equals_the_per_tool_definition():
    """tools=used keeps a tool iff its name is a target call or appears as ``name(`` (not after a
    word character or a dot) in the conversation: the one-pass scan agrees with searching for
    each tool by itself, on random texts made of the names, dots, spaces and parentheses."""
    import re

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from progra_core.data.awareness import _tools

    names = ["ls", "cd", "mv", "sort", "sort_lines", "a.b", "b", "x-y", "mean"]
    tools = json.dumps([{"name": n} for n in names])
    pieces = st.sampled_from(names + [".", " ", "(", ")", "_", "z", "\n", "ls("])

    @settings(max_examples=200, deadline=None)
    @given(st.lists(pieces, max_size=30).map("".join), st.lists(st.sampled_from(names), max_size=2))
    def check(text, targets):
        seg = {"tools": tools, "history": [{"content": text}], "target_calls": [{"name": n} for n in targets]}
        want = [n for n in names if n in targets or re.search(rf"(?<![\w.]){re.escape(n)}\s*\(", text)]
        assert [d["name"] for d in json.loads(_tools(seg, "used"))] == want

    check()
