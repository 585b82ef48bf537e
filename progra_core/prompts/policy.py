"""The target policy's format (Fig. 10): the system prompt with info_meta, the awareness-guided
turn message of Eq. 12, the SFT target, and how an output is read back (:func:`parse_action`). Used by ``sft_data``, the rollouts and evaluation;
kept apart from ``prompts`` so their edits do not change the awareness stage's code version."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from progra_core.calls import Call, CallParseError, parse_calls
from progra_core.prompts.tools import render_tools

__all__ = ["policy_system", "progress_query", "format_policy_target", "Action", "parse_action", "template_ok"]

_POLICY_SYSTEM = """You are an expert at calling functions. You get the functions you may use and a conversation
with a user. For each step, first summarise the progress so far, then think, then act:
<summary>what the user wants, the confirmed parameters, the calls made and their results, the
current state of the environment, and the plan from here</summary>
<think>why this next action, which function fits, how its arguments are filled</think>
<answer>[func_name1(arg1=value1, arg2=value2), func_name2(arg=value)]</answer>
Rules: output only these three sections. Call only the functions listed below, with their exact
parameter names; the names in the example are placeholders. If a required value is missing, put
"I need more information." in <answer> as plain text. If no listed function can do the task, put
"There are no appropriate functions." in <answer>. Calls run in order; when one fails, the rest of
that list does not run, so infer the current state from the results and do not repeat failed calls.

Available functions:
{tools}"""


_PLAIN_POLICY_SYSTEM = """You are an expert at calling functions. You get the functions you may use and a conversation
with a user. For each step, think first, then act:
<think>what has been done, what is still needed, and which function with which arguments comes next</think>
<answer>[func_name1(arg1=value1, arg2=value2), func_name2(arg=value)]</answer>
Rules: call only the functions listed below, with their exact parameter names; the names in the
example are placeholders. If a required value is missing, put "I need more information." in
<answer> as plain text. If no listed function can do the task, put "There are no appropriate
functions." in <answer>. When the request is done, answer the user in <answer> in plain words.

Available functions:
{tools}"""


def policy_system(tools_json: str | None, scenario: str | None = None, full_docs: bool = False,
                  awareness: bool = True) -> str:
    """The policy's system prompt (info_meta): with ``awareness`` the Fig. 10 format
    (summary, think, answer), without it the plain CoT format the baselines use."""
    template = _POLICY_SYSTEM if awareness else _PLAIN_POLICY_SYSTEM
    text = template.format(tools=render_tools(tools_json, full=full_docs))
    return text + (f"\n\nScenario:\n{scenario}" if scenario else "")


def progress_query(query: str, progress: str | None) -> str:
    """The user message of an awareness-guided turn (Eq. 12): the policy's own latest summary
    stands in for every earlier turn, followed by the current request Q_i."""
    if not progress:
        return query
    return f"Progress so far (your own summary):\n{progress}\n\nCurrent request:\n{query}"


def format_policy_target(calls_text: str, summary: str | None = None, plan: str | None = None,
                         rationale: str | None = None) -> str:
    """The Fig. 10 target: ``<summary>S^a</summary><think>rationale</think><answer>[calls]</answer>``;
    without awareness (cold start) only the answer."""
    if summary is None:
        return f"<answer>{calls_text}</answer>"
    s = summary.strip() + (f"\nPlan: {plan.strip()}" if plan else "")
    return f"<summary>{s}</summary>\n<think>{(rationale or '').strip()}</think>\n<answer>{calls_text}</answer>"


# -- reading an output back -----------------------------------------------------------------

_TAG = {t: re.compile(rf"<{t}>(.*?)(?:</{t}>|$)", re.S) for t in ("summary", "think", "answer")}
_AWARE = re.compile(r"^\s*<summary>(?!\s*</summary>).+?</summary>\s*<think>.*?</think>\s*<answer>.+?</answer>\s*$", re.S)
_PLAIN = re.compile(r"^\s*(?:<summary>.*?</summary>\s*)?(?:<think>.*?</think>\s*)?<answer>.+?</answer>\s*$", re.S)


@dataclass
class Action:
    """One model output, split into its regions. ``calls`` is None when the answer is not a call
    list (a message to the user, or unparsable): by BFCL's rule such an answer ends the turn."""

    text: str
    summary: str | None = None
    think: str | None = None
    answer: str | None = None
    calls: list[Call] | None = None
    parse_error: str | None = None
    observations: list[str] = field(default_factory=list)

    @property
    def has_calls(self) -> bool:
        return bool(self.calls)


def _region(tag: str, text: str) -> str | None:
    m = _TAG[tag].search(text)
    return m.group(1).strip() if m else None


def parse_action(text: str) -> Action:
    """Split an action into summary / think / answer and parse the answer's calls with ``ast``
    (never ``eval``). Without an ``<answer>`` tag a bare call list still counts as calls (the
    template term is what punishes the missing tags)."""
    a = Action(text=text, summary=_region("summary", text), think=_region("think", text), answer=_region("answer", text))
    body = a.answer if a.answer is not None else text.strip()
    if body.startswith("[") or a.answer is None:
        try:
            calls = parse_calls(body)
            a.calls = calls or None
        except CallParseError as e:
            a.parse_error = str(e)
    return a


def template_ok(text: str, awareness: bool) -> bool:
    return bool((_AWARE if awareness else _PLAIN).match(text))
