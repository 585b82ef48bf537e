"""Eq. 14 terms on hand-made actions: TEMPLATE, SCHEMA, SUCCESS (state and response checks), penalty,
Eq. 6, and the rubric that weights named terms (a new term needs no rollout change)."""

import json

import pytest

from progra_core.calls import Call
from progra_core.config import GRPOConfig
from progra_core.prompts.policy import parse_action, template_ok
from progra_core.train.rewards import Played, Rubric, Step, discounted_return, responses_ok, schema_ok

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


def _played(*texts_and_success, prompted=True):
    steps = [Step(t, parse_action(t), 0, ok is not None, ok) for t, ok in texts_and_success]
    return Played("e", TOOLS, ["q"], prompted, steps)


def test_the_rubric_weights_the_eq14_terms_and_discounts_the_return():
    cfg = GRPOConfig(alpha_fmt=0.1, alpha_schema=0.2, alpha_acc=1.0, penalty=0.05, gamma=0.5)
    call = "<summary>s</summary><think>t</think><answer>[cd(folder='a')]</answer>"
    done = "<summary>s</summary><think>t</think><answer>Done.</answer>"
    [(per_action, R)] = Rubric.from_config(cfg).score([_played((call, None), (done, True))])
    # one turn of two actions: TEMPLATE pays 1/2 of α_fmt to each, SCHEMA all of α_schema to the one call action
    assert per_action[0] == pytest.approx({"fmt": 0.05, "schema": 0.2, "acc": 0.0, "pen": -0.05})
    assert per_action[1] == pytest.approx({"fmt": 0.05, "schema": 0.0, "acc": 1.0, "pen": 0.0})  # a closing message
    assert R["fmt"] == pytest.approx(0.05 + 0.5 * 0.05) and R["acc"] == pytest.approx(0.5) and R["pen"] == pytest.approx(-0.05)
    assert R["total"] == pytest.approx(sum(per_action[0].values()) + 0.5 * sum(per_action[1].values()))
    assert discounted_return(per_action, 0.5, ("acc",)) == pytest.approx({"acc": 0.5, "total": 0.5})


def test_a_new_term_is_a_named_weighted_callable():
    def brevity(played):  # pays for short actions: no edit to the rollout or the rubric
        return [[1.0 if len(s.text) < 60 else 0.0 for s in p.steps] for p in played]

    cfg = GRPOConfig(term_weights={"brevity": 0.3})
    rubric = Rubric.from_config(cfg, ("acc", "brevity"), extra={"brevity": brevity})
    assert rubric.names == ("acc", "brevity")
    [(per_action, R)] = rubric.score([_played(("<answer>Done.</answer>", True))])
    assert per_action == [pytest.approx({"acc": 1.0, "brevity": 0.3})] and R["total"] == pytest.approx(1.3)
    with pytest.raises(ValueError, match="unknown reward terms"):
        Rubric.from_config(cfg, ("acc", "nope"))
    with pytest.raises(ValueError, match="no weight"):
        Rubric.from_config(GRPOConfig(), ("brevity",), extra={"brevity": brevity})
