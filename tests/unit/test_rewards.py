"""Eq. 14 terms on hand-made actions: TEMPLATE, SCHEMA, SUCCESS (state and response checks), penalty, Eq. 6."""

import json

import pytest

from progra_core.calls import Call
from progra_core.rewards import (
    RewardWeights,
    action_reward,
    discounted_return,
    parse_action,
    responses_ok,
    schema_ok,
    template_ok,
)

TOOLS = json.dumps([
    {"name": "cd", "parameters": {"type": "dict", "properties": {"folder": {"type": "string"}}, "required": ["folder"]}},
    {"name": "mean", "parameters": {"type": "dict", "properties": {"numbers": {"type": "array"}}, "required": ["numbers"]}},
    {"name": "set_mode", "parameters": {"type": "dict", "properties": {"mode": {"type": "string", "enum": ["eco", "sport"]},
                                                                         "level": {"type": "integer"}}, "required": ["mode"]}},
])


@pytest.mark.parametrize("text,aware,plain", [
    ("<summary>s</summary><think>t</think><answer>[cd(folder='a')]</answer>", True, True),
    ("<summary>s</summary>\n<think></think>\n<answer>Done.</answer>", True, True),
    ("<think>t</think><answer>[cd(folder='a')]</answer>", False, True),
    ("<answer>[cd(folder='a')]</answer>", False, True),
    ("<summary> </summary><think>t</think><answer>x</answer>", False, True),  # an empty summary is not awareness
    ("[cd(folder='a')]", False, False),
    ("<summary>s</summary><think>t</think><answer>[cd(folder='a')]", False, False),  # unclosed answer
    ("<answer>x</answer> trailing words", False, False),
])
def test_template(text, aware, plain):
    assert template_ok(text, awareness=True) is aware
    assert template_ok(text, awareness=False) is plain


def test_parse_action_regions_calls_and_messages():
    a = parse_action("<summary>in /a</summary><think>go</think><answer>[cd(folder='b'), mean(numbers=[1, 2])]</answer>")
    assert a.summary == "in /a" and a.think == "go"
    assert a.calls == [Call("cd", {"folder": "b"}), Call("mean", {"numbers": [1, 2]})]
    msg = parse_action("<summary>x</summary><think>y</think><answer>I need more information.</answer>")
    assert msg.calls is None and not msg.has_calls and msg.answer == "I need more information."
    broken = parse_action("<answer>[cd(folder=</answer>")
    assert broken.calls is None and broken.parse_error
    assert parse_action("[cd(folder='x')]").calls == [Call("cd", {"folder": "x"})]  # bare list: calls, no template
    assert parse_action("<answer>[__import__('os').system('x')]</answer>").calls is None  # ast whitelist, never eval


def test_schema_checks_names_arguments_types_and_enums():
    assert schema_ok([Call("cd", {"folder": "a"})], TOOLS)
    assert schema_ok([Call("cd", {}, ("a",))], TOOLS)  # positional binds in documented order
    assert schema_ok([Call("set_mode", {"mode": "eco", "level": 2})], TOOLS)
    assert not schema_ok(None, TOOLS) and not schema_ok([], TOOLS)  # a message has no schema credit
    assert not schema_ok([Call("rm", {"file": "a"})], TOOLS)  # unknown function
    assert not schema_ok([Call("cd", {"dir": "a"})], TOOLS)  # unknown argument
    assert not schema_ok([Call("cd", {})], TOOLS)  # required missing
    assert not schema_ok([Call("cd", {"folder": 3})], TOOLS)  # wrong type
    assert not schema_ok([Call("mean", {"numbers": "1,2"})], TOOLS)
    assert not schema_ok([Call("set_mode", {"mode": "eco", "level": True})], TOOLS)  # bool is not an integer
    assert not schema_ok([Call("set_mode", {"mode": "turbo"})], TOOLS)  # not in the enum
    assert not schema_ok([Call("cd", {"folder": "a"}, ("b",))], TOOLS)  # same argument twice
    assert not schema_ok([Call("cd", {"folder": "a"}), Call("cd", {})], TOOLS)  # every call must pass


def test_responses_are_a_multiset_containment():
    assert responses_ok(["a", "b"], ["b", "x", "a"])
    assert responses_ok([], ["anything"])
    assert not responses_ok(["a", "a"], ["a"])
    assert not responses_ok(["a"], [])


def test_action_reward_terms_and_discounted_return():
    w = RewardWeights(alpha_fmt=0.1, alpha_schema=0.2, alpha_acc=1.0, penalty=0.05, gamma=0.5)
    r1 = action_reward(True, True, False, True, w)
    assert r1 == {"fmt": 0.1, "schema": 0.2, "acc": 0.0, "pen": -0.05}
    r2 = action_reward(True, False, True, False, w)  # a closing message: no call, no penalty
    assert r2 == {"fmt": 0.1, "schema": 0.0, "acc": 1.0, "pen": -0.0}
    R = discounted_return([r1, r2], w.gamma)
    assert R["fmt"] == pytest.approx(0.1 + 0.5 * 0.1)
    assert R["acc"] == pytest.approx(0.5)
    assert R["pen"] == pytest.approx(-0.05)
    assert R["total"] == pytest.approx(sum(r1.values()) + 0.5 * sum(r2.values()))
