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
    # one turn of two actions: TEMPLATE and SCHEMA are paid once for the turn, on its closing action
    assert per_action[0] == pytest.approx({"fmt": 0.0, "schema": 0.0, "acc": 0.0, "pen": -0.05})
    assert per_action[1] == pytest.approx({"fmt": 0.1, "schema": 0.2, "acc": 1.0, "pen": 0.0})  # a closing message
    assert R["fmt"] == pytest.approx(0.5 * 0.1) and R["schema"] == pytest.approx(0.5 * 0.2)
    assert R["acc"] == pytest.approx(0.5) and R["pen"] == pytest.approx(-0.05)
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


# -- no reward for padding -----------------------------------------------------------------------

FS_TOOLS = json.dumps([
    {"name": "cd", "parameters": {"type": "dict", "properties": {"folder": {"type": "string"}}, "required": ["folder"]}},
    {"name": "ls", "parameters": {"type": "dict", "properties": {"a": {"type": "boolean"}}, "required": []}},
    {"name": "pwd", "parameters": {"type": "dict", "properties": {}, "required": []}},
])


def _act(answer: str, summary: str = "s") -> str:
    return f"<summary>{summary}</summary><think>t</think><answer>{answer}</answer>"


GOOD, BAD_ARG, UNKNOWN, BARE = _act("[cd(folder='a')]"), _act("[cd(dir='a')]"), _act("[rm(x=1)]"), "[cd(folder='a')]"
END, READ = _act("Done."), (_act("[ls()]"), _act("[pwd()]"), _act("[ls(a=True)]"))


def _episode(turns: list[tuple[list[str], bool]]) -> Played:
    """``turns``: (action texts, the last one closes the turn, SUCCESS of the turn)."""
    steps = []
    for t, (texts, ok) in enumerate(turns):
        for k, text in enumerate(texts):
            last = k == len(texts) - 1
            steps.append(Step(text, parse_action(text), t, last, ok if last else None))
    return Played("e", FS_TOOLS, ["q"] * len(turns), True, steps)


#: hand-built episodes: a correct turn, failed calls of each kind, a malformed action, two turns
EPISODES = {
    "correct": [([GOOD, END], True)],
    "invalid call then end, failed": [([BAD_ARG, END], False)],
    "unknown function, failed": [([UNKNOWN, END], False)],
    "untagged call": [([BARE, END], True)],
    "ends at once, failed": [([END], False)],
    "two turns, second failed": [([GOOD, END], True), ([BAD_ARG, END], False)],
    "two calls then end": [([GOOD, READ[0], END], True)],
}


def _padded(turns, extra: int):
    """Every variant of ``turns`` with ``extra`` valid read-only calls inserted before a turn's
    closing action (BFCL's checks ignore them: SUCCESS unchanged)."""
    for t, (texts, ok) in enumerate(turns):
        for pos in range(len(texts)):  # anywhere before the closing action
            for read in READ:
                new = [*texts[:pos], *[read] * extra, *texts[pos:]]
                yield [*turns[:t], (new, ok), *turns[t + 1:]]


@pytest.mark.parametrize("weights", [{}, {"alpha_fmt": 1.0, "alpha_schema": 1.0, "penalty": 0.01}, {"gamma": 0.9}])
def test_no_padded_variant_scores_above_its_episode(weights):
    """Symptom (shares of a turn): (invalid call, end, fail) 0.080 vs the same + 2 valid read-only calls 0.173."""
    rubric = Rubric.from_config(GRPOConfig(**weights))
    for name, turns in EPISODES.items():
        [(_, base)] = rubric.score([_episode(turns)])
        for extra in (1, 2, 3):
            for variant in _padded(turns, extra):
                [(_, padded)] = rubric.score([_episode(variant)])
                assert padded["total"] < base["total"], (name, extra, padded, base)


def test_the_issue_examples_order_as_they_should():
    rubric = Rubric.from_config(GRPOConfig())
    total = lambda turns: rubric.score([_episode(turns)])[0][1]["total"]  # noqa: E731
    failed = total([([BAD_ARG, END], False)])
    padded_failed = total([([BAD_ARG, READ[0], READ[1], END], False)])
    assert padded_failed < failed
    assert total([([GOOD, END], True)]) > total([([GOOD, READ[0], READ[1], END], True)]) > failed
