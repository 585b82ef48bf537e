"""Verification (Eq. 9-10) of notes whose a_fc holds several calls."""

from __future__ import annotations

import json
import re

from progra_core.calls import Call, calls_to_records, format_calls, parse_calls
from progra_core.config import VerifyConfig
from progra_core.data.verify import verify_shard
from progra_core.llm import ChatResult

TOOLS = json.dumps([
    {"name": "cd", "parameters": {"properties": {"folder": {"type": "string"}}}},
    {"name": "ls", "parameters": {"properties": {"a": {"type": "boolean"}}}},
    {"name": "wc", "parameters": {"properties": {"file_name": {"type": "string"}, "mode": {"type": "string"}}}},
])


class ClosesEarly:
    """A scripted verifier that behaves like the 135M one: at each decision it follows the note's
    plan (a call list after ``Plan:``) for the call the list is at, but after any call it closes
    the list. Speaks the guided protocol: ``extra["choices"]`` picks, otherwise a value."""

    def __init__(self):
        self.requests = 0

    def batch(self, reqs, on_result=None):
        self.requests += len(reqs)
        return [self._answer(r) for r in reqs]

    def _answer(self, req) -> ChatResult:
        note = req.messages[-1]["content"]
        plan = parse_calls(re.search(r"Plan: (\[.*?\])\n", note).group(1))
        text = req.prefix
        done = text.count(")")  # the calls already closed in the list (no value holds a ")")
        choices = req.extra.get("choices")
        if choices is None:  # a value: the planned one, then what ends it
            call = plan[min(done, len(plan) - 1)]
            name = re.findall(r"(\w+)='?$", text)[-1]
            value = call.args[name]
            return ChatResult(text + (f"{value}'" if isinstance(value, str) else f"{value!r})"), req.model)
        if "]" in choices:  # after a call: always close
            return ChatResult(text + "]", req.model)
        call = plan[min(done, len(plan) - 1)]
        if choices == ["True", "False"]:
            pick = repr(call.args[re.findall(r"(\w+)=$", text)[-1]])
        elif choices[0].lstrip(", ").endswith("("):  # a function name
            pick = next(c for c in choices if c.lstrip(", ") == f"{call.name}(")
        else:  # the next argument of the planned call, or close it
            given = re.findall(r"(\w+)=", text[text.rfind(call.name + "("):])
            todo = [k for k in call.args if k not in given]
            pick = next(c for c in choices if todo and c.lstrip(", ") == f"{todo[0]}=") if todo else ")"
        return ChatResult(text + pick, req.model)


def _item(i: int, target: list[Call], plan: list[Call]) -> dict:
    return {"awareness_id": f"a{i}", "segment_id": f"s{i}", "text": f"<summary>Plan: {format_calls(plan)}\n</summary>",
            "tools": TOOLS, "scenario": "", "target_calls": calls_to_records(target), "env": None, "involved_classes": []}


def test_a_multi_call_note_is_verified_call_by_call_and_a_wrong_later_call_still_fails():
    two = [Call("cd", args={"folder": "docs"}), Call("wc", args={"file_name": "a.txt", "mode": "l"})]
    wrong = [two[0], Call("wc", args={"file_name": "b.txt", "mode": "l"})]
    one = [Call("ls", args={"a": True})]
    items = [_item(0, two, two), _item(1, two, wrong), _item(2, one, one), _item(3, one, [Call("ls", args={"a": False})])]

    def run(**cfg):
        gw = ClosesEarly()
        out = verify_shard(items, gw, "local/v", VerifyConfig(**cfg)).to_pylist()
        return [(r["equal"], r["reason"]) for r in out], [r["predicted_text"] for r in out], gw.requests

    before, _, _ = run(call_by_call=False)  # the list closes after its first call, whatever the plan says
    assert before == [(False, "mismatch"), (False, "mismatch"), (True, "ok"), (False, "mismatch")]
    after, texts, _ = run()
    assert after == [(True, "ok"), (False, "mismatch"), (True, "ok"), (False, "mismatch")]
    assert parse_calls(texts[0]) == two and parse_calls(texts[1]) == wrong  # each step's own call, in order
