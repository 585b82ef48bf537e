"""The held-out next-call metric: its cases are held-out BFCL steps in the training prompt, its
scores separate valid / right function / exact / ended the turn, and they reach eval_summary and
Table 1."""

from __future__ import annotations

import json

from progra_core.calls import calls_from_records, format_calls
from progra_core.config import EvaluateConfig
from progra_core.evaluation import report
from progra_core.evaluation.bfcl import Subject
from progra_core.evaluation.next_call import next_call_cases, run_next_call
from progra_core.llm.types import ChatResult
from progra_core.sources.bfcl import split_of

CFG = EvaluateConfig(next_call_limit=8)


class Answers:
    """A gateway that answers each case with ``answer(case_id)``."""

    def __init__(self, answer):
        self.answer, self.asked = answer, []

    def batch(self, reqs, on_result=None):
        self.asked += reqs
        out = [ChatResult(self.answer(r.id), r.model, r.role, r.id) for r in reqs]
        for i, r in enumerate(out):
            if on_result:
                on_result(i, r)
        return out


def test_cases_are_held_out_steps_in_the_training_prompt():
    cases = next_call_cases(CFG, 50, awareness=True, docs_style="compact")
    assert [c["kind"] for c in cases].count("call") == 8 and [c["kind"] for c in cases].count("end") == 2
    assert cases == next_call_cases(CFG, 50, awareness=True, docs_style="compact")  # deterministic
    for c in cases:
        entry = c["case_id"].split("#")[0].removeprefix("end:").removeprefix("bfcl:")
        assert split_of(entry, 50) == "held_out", entry
    call = cases[0]
    seg_prompt = call["prompt"]
    assert seg_prompt[0]["role"] == "system" and ". Parameters: " in seg_prompt[0]["content"]  # compact docs, as training
    assert "<summary>" in seg_prompt[0]["content"] and "request is done" in seg_prompt[0]["content"]
    assert next_call_cases(EvaluateConfig(next_call_limit=0), 50, True, "compact") == []


def test_scores_separate_validity_function_and_arguments(tmp_path):
    cases = next_call_cases(CFG, 50, awareness=True, docs_style="compact")
    by_id = {c["case_id"]: c for c in cases}

    def gold(cid):
        c = by_id[cid]
        return "<answer>Done.</answer>" if c["kind"] == "end" else f"<answer>{format_calls(calls_from_records(c['target']))}"

    rows = run_next_call(cases, Answers(gold), Subject("base", "base", "local/x"), CFG).to_pylist()
    assert all(r["passed"] for r in rows) and all(r["valid_call"] for r in rows if r["category"] == "call")

    def wrong(cid):
        c = by_id[cid]
        if c["kind"] == "end":
            return "<answer>[ls()]</answer>"  # keeps calling when the turn is done
        first = calls_from_records(c["target"])[0]
        return {0: "I would list the files.", 1: "[no_such_function()]"}.get(hash(cid) % 3, f"[{first.name}(zzz=1)]")

    rows = run_next_call(cases, Answers(wrong), Subject("base", "base", "local/x"), CFG).to_pylist()
    assert not any(r["passed"] for r in rows)
    for r in rows:
        if r["category"] == "end":
            assert r["error_type"] == "next_call:no_end"
        elif r["valid_call"]:
            assert r["error_type"] in ("next_call:wrong_function", "next_call:wrong_arguments")
            assert r["right_function"] is (r["error_type"] == "next_call:wrong_arguments")
        else:
            assert r["error_type"] == "next_call:invalid" and r["right_function"] is False

    import pyarrow as pa

    from progra_core.schemas import EVAL_RESULTS
    from storage import Catalog, DatasetStore

    DatasetStore(tmp_path).write("eval_results", pa.Table.from_pylist(rows, schema=EVAL_RESULTS), dataset_id="nc1")
    summary = Catalog(tmp_path).eval_summary(["nc1"])
    call = next(s for s in summary if s["category"] == "call")
    n = sum(1 for r in rows if r["category"] == "call")
    assert call["valid_rate"] == round(100 * sum(bool(r["valid_call"]) for r in rows if r["category"] == "call") / n, 2)
    headers, body = report.table1(summary)
    assert headers[-4:] == ["Next: valid", "Next: func", "Next: exact", "Next: ends turn"] and body[0][-2:] == ["0.00", "0.00"]
    assert json.loads(rows[0]["transcript"])["target"]


def test_budget_forcing_turns_a_looping_note_into_an_answer_for_local_models_only():
    """An answer cut inside its note (a loop or the token budget) is continued once from the note
    with the loop cut, the section closed and <answer> opened; off, remote, or an answer already
    begun: scored as it was cut."""
    from progra_core.prompts.policy import cut_loop, forced_answer

    cases = next_call_cases(CFG, 50, awareness=True, docs_style="compact")
    by_id = {c["case_id"]: c for c in cases}
    loop = "<summary>Now the user asks: do it.\nPlan: call f(a=1, " + "mode='w', wc=True, " * 8

    class Looping(Answers):
        def batch(self, reqs, on_result=None):
            self.asked += reqs
            out = []
            for r in reqs:
                c = by_id[r.id]
                gold = "Done." if c["kind"] == "end" else format_calls(calls_from_records(c["target"]))
                if r.prefix is None:
                    text = "<summary>Now" + " ok" * 30 if c["kind"] == "end" else loop
                    out.append(ChatResult(text, r.model, r.role, r.id, finish_reason="length", completion_tokens=448))
                else:
                    out.append(ChatResult(r.prefix + gold, r.model, r.role, r.id, finish_reason="stop", completion_tokens=20))
            return out

    def scores(cfg, model="local/x"):
        gw = Looping(None)
        rows = run_next_call(cases, gw, Subject("base", "base", model), cfg).to_pylist()
        return rows, gw.asked

    rows, asked = scores(CFG)
    calls = [r for r in rows if r["category"] == "call"]
    assert len(asked) == len(cases) and calls and not any(r["valid_call"] for r in calls)  # off: every answer stays cut
    forced = EvaluateConfig(next_call_limit=8, forced_answer_tokens=64)
    rows, asked = scores(forced)
    assert all(r["passed"] for r in rows) and len(asked) == 2 * len(cases)
    again = asked[len(cases):]
    assert {r.max_tokens for r in again} == {64} and all(r.prefix.endswith("</summary>\n<answer>") for r in again)
    assert all(r.prefix.count("mode='w', wc=True,") <= 1 for r in again)  # the loop is cut, not shown back
    assert all(r["completion_tokens"] == 468 for r in rows)  # both parts counted
    rows, asked = scores(forced, model="openai/x")  # an endpoint takes no prefill: never continued
    assert len(asked) == len(cases) and not any(r["valid_call"] for r in rows if r["category"] == "call")

    assert forced_answer("<summary>s</summary>\n<think>t</think>\n<answer>[f(a=") is None  # begun: a broken answer
    assert forced_answer("[f(a=1)] and more") is None  # no section opened: another prompt's format
    assert forced_answer("<summary>s</summary>\n<think>because") == "<summary>s</summary>\n<think>because</think>\n<answer>"
    assert cut_loop("no loop here, just a long text that never comes back to itself.").endswith("to itself.")
