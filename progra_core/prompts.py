"""Prompts, written for progra following the structure of the paper's Fig. 9 (awareness), Fig. 10
(policy format) and the verifier/augmenter roles of §3.2. Bump ``PROMPT_VERSION`` when editing:
it enters the awareness dataset's rows and fingerprint."""

from __future__ import annotations

import json

__all__ = [
    "PROMPT_VERSION",
    "render_tools",
    "render_messages",
    "awareness_messages",
    "AWARENESS_RETRY",
    "verify_messages",
    "paraphrase_messages",
    "policy_system",
    "format_policy_target",
]

PROMPT_VERSION = "v1"


def render_tools(tools_json: str | list | None, full: bool = False) -> str:
    """Tool docs as compact signatures (``name(arg: type, opt?: type) - description``), or as the
    raw JSON with ``full=True``. Compact text keeps small models' prompts short."""
    docs = json.loads(tools_json) if isinstance(tools_json, str) else (tools_json or [])
    if full:
        return json.dumps(docs, ensure_ascii=False)
    lines = []
    for d in docs:
        fn = d.get("function", d)
        params = (fn.get("parameters") or {}).get("properties") or {}
        required = set((fn.get("parameters") or {}).get("required") or [])
        args = ", ".join(f"{p}{'' if p in required else '?'}: {(s or {}).get('type', 'any')}" for p, s in params.items())
        desc = (fn.get("description") or "").split("Tool description:")[-1].strip().split(". ")[0].strip()
        lines.append(f"- {fn.get('name')}({args}){' - ' + desc if desc else ''}")
    return "\n".join(lines)


def render_messages(messages: list[dict] | None) -> str:
    if not messages:
        return "(nothing yet)"
    tag = {"user": "User", "assistant": "Assistant", "tool": "Result", "system": "System"}
    return "\n".join(f"{tag.get(m['role'], m['role'])}: {m['content']}" for m in messages)


_AWARENESS_SYSTEM = """You keep track of progress in a conversation between a user and a function-calling assistant.
Read the conversation so far and the user's current request, then write a progress note that a
colleague could act on without seeing the conversation. Never write a function call yourself:
describe in words what has happened and what should happen next.

Cover, briefly and only from what the conversation actually shows:
1. The user's goal: what they want overall and in the current request.
2. Confirmed parameters: every value the user or an earlier result has fixed (names, ids, paths,
   amounts). Say which needed values are still unknown instead of guessing them.
3. Calls so far: which functions were called, with what outcome, and which failed and why.
4. Environment state: what the state must be now given the calls that succeeded (a failed call
   changed nothing).
5. Plan: the next action(s) that follow from the facts, in order, with the values they need.
6. Any other detail that makes the next action right (preferences, hints, constraints).

Answer in exactly this form:
<summary>goal, confirmed parameters, calls so far and the current state</summary>
<plan>the next steps, in order, with their values</plan>
<rationale>one or two sentences linking the summary to the plan</rationale>"""

#: Prefill and stop for the awareness answer: the tags anchor small models to the format.
AWARENESS_PREFIX = "<summary>"
AWARENESS_STOP = ["</rationale>"]

AWARENESS_RETRY = ("Your previous answer cannot be used: {reason}. Answer again with the three sections "
                   "<summary>, <plan> and <rationale>, in plain words, without any function call.")


def awareness_messages(seg: dict, tools_text: str) -> list[dict]:
    steps = render_messages(seg.get("prior_steps")) if seg.get("prior_steps") else "(none yet)"
    user = (
        f"Scenario:\n{seg.get('scenario') or '(none)'}\n\nAvailable functions:\n{tools_text}\n\n"
        f"Conversation so far:\n{render_messages(seg.get('history'))}\n\n"
        f"Current user request:\n{seg.get('query')}\n\n"
        f"Steps already taken for this request:\n{steps}\n\n"
        "Write the progress note."
    )
    return [{"role": "system", "content": _AWARENESS_SYSTEM}, {"role": "user", "content": user}]


VERIFY_PREFIX = "["

_VERIFY_SYSTEM = """You are a function-calling assistant. You get a description of the available functions and a
progress note about an ongoing task. Decide the very next function call(s) the note calls for and
reply with only the call list: square brackets around calls written with keyword arguments and
literal values. Use only the listed functions and their exact parameter names. Reply with nothing else."""


def verify_messages(tools_text: str, scenario: str, awareness_text: str) -> list[dict]:
    """LLM_ver sees info_meta (tools + scenario) and S^a only: never c_his or q (Eq. 9)."""
    user = (f"Scenario:\n{scenario or '(none)'}\n\nAvailable functions:\n{tools_text}\n\n"
            f"Progress note:\n{awareness_text}\n\nThe next call list:")
    return [{"role": "system", "content": _VERIFY_SYSTEM}, {"role": "user", "content": user}]


_PARAPHRASE_SYSTEM = """You rewrite progress notes. Reword how the user's goal and request are described, using
different wording and sentence structure, but keep every fact: all names, ids, paths, numbers,
quoted values and function names must appear exactly as they are. Keep the <summary>, <plan>
and <rationale> sections. Reply with the rewritten note only."""


def paraphrase_messages(text: str) -> list[dict]:
    return [{"role": "system", "content": _PARAPHRASE_SYSTEM}, {"role": "user", "content": text}]


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


def policy_system(tools_json: str | None, scenario: str | None = None, full_docs: bool = False) -> str:
    text = _POLICY_SYSTEM.format(tools=render_tools(tools_json, full=full_docs))
    return text + (f"\n\nScenario:\n{scenario}" if scenario else "")


def format_policy_target(calls_text: str, summary: str | None = None, plan: str | None = None,
                         rationale: str | None = None) -> str:
    """The Fig. 10 target: ``<summary>S^a</summary><think>rationale</think><answer>[calls]</answer>``;
    without awareness (cold start) only the answer."""
    if summary is None:
        return f"<answer>{calls_text}</answer>"
    s = summary.strip() + (f"\nPlan: {plan.strip()}" if plan else "")
    return f"<summary>{s}</summary>\n<think>{(rationale or '').strip()}</think>\n<answer>{calls_text}</answer>"
