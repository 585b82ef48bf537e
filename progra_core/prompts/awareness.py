"""Prompts of the PAG data roles, written for progra following the structure of the paper's Fig. 9
(awareness, LLM_gen) and the verifier/augmenter roles of §3.2 (LLM_ver, LLM_aug). The policy's own
format (Fig. 10) lives in ``prompts.policy``, so editing it never changes these stages' code version. Bump
``PROMPT_VERSION`` when editing: it enters the awareness dataset's rows and fingerprint."""

from __future__ import annotations

from progra_core.prompts.tools import describe_calls, render_messages

__all__ = [
    "PROMPT_VERSION",
    "awareness_messages",
    "AWARENESS_RETRY",
    "AWARENESS_PLACEHOLDERS",
    "AWARENESS_OPENERS",
    "verify_messages",
    "paraphrase_messages",
]

PROMPT_VERSION = "v2"


_AWARENESS_SYSTEM = """You keep track of progress in a conversation between a user and a function-calling assistant.
You see the conversation so far, the user's current request, the action the assistant actually
takes next, and what happens after it. Write a progress note for a colleague who will see only
the note and the function list: it must let them choose that same next action, with the same
values, without seeing the conversation. Never write code or a function call with parentheses:
name functions and their argument values in words.

Cover, briefly and only with facts the conversation shows:
1. The user's goal: what they want overall and in the current request.
2. Confirmed parameters: every value the user or an earlier result has fixed (names, ids, paths,
   amounts), and which needed values are still unknown.
3. Calls so far: which functions were called, with what outcome, and which failed and why.
4. Environment state: what the state is now, given the calls that succeeded.
5. Plan: the next action (function name and argument values) and the steps expected after it.
6. Any other detail that makes the next action right (preferences, hints, constraints).

Answer in exactly this form:
<summary>{summary}</summary>
<plan>{plan}</plan>
<rationale>{rationale}</rationale>"""

#: The format line's placeholders: an answer that repeats them says nothing (``template_echo``).
AWARENESS_PLACEHOLDERS = {
    "summary": "goal, confirmed parameters, calls so far and the current state",
    "plan": "the next steps, in order, with their values",
    "rationale": "one or two sentences linking the summary to the plan",
}
_AWARENESS_SYSTEM = _AWARENESS_SYSTEM.format(**AWARENESS_PLACEHOLDERS)

#: Prefill and stop for the awareness answer: the tags anchor small models to the format.
AWARENESS_PREFIX = "<summary>"
#: Section-guided generation (local models) also prefills the first words of each section, so a
#: small model starts writing content instead of copying the format line.
AWARENESS_OPENERS = {"summary": "The user", "plan": "Next, call", "rationale": "This"}
AWARENESS_STOP = ["</rationale>"]

AWARENESS_RETRY = ("Your previous answer cannot be used: {reason}. Answer again with the three sections "
                   "<summary>, <plan> and <rationale>, in plain words, without any function call.")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rsplit("\n", 1)[0] + "\n(...)"


def awareness_messages(seg: dict, tools_text: str, future_chars: int = 2000) -> list[dict]:
    """The whole segment τ' of Eq. 7 (info_meta, c_his, q, a_fc, c_fut), with a_fc in words and
    c_fut clipped to ``future_chars``."""
    steps = render_messages(seg.get("prior_steps")) if seg.get("prior_steps") else "(none yet)"
    future = _clip(render_messages(seg.get("future")), future_chars) if seg.get("future") else "(the conversation ends here)"
    user = (
        f"Scenario:\n{seg.get('scenario') or '(none)'}\n\nAvailable functions:\n{tools_text}\n\n"
        f"Conversation so far:\n{render_messages(seg.get('history'))}\n\n"
        f"Current user request:\n{seg.get('query')}\n\n"
        f"Steps already taken for this request:\n{steps}\n\n"
        f"Next action taken:\n{describe_calls(seg.get('target_calls'))}\n\n"
        f"Afterwards:\n{future}\n\n"
        "Write the progress note."
    )
    return [{"role": "system", "content": _AWARENESS_SYSTEM}, {"role": "user", "content": user}]


VERIFY_PREFIX = "["

_VERIFY_SYSTEM = """You are a function-calling assistant. You get a description of the available functions and a
progress note about an ongoing task. Write the function call(s) that the note's plan names next, as
a call list: square brackets around calls written with keyword arguments and literal values. Use
only the listed functions and their exact parameter names. Reply with nothing else.

Example. A plan "call open_door with door_id = 'A1', floor = 2; then lock with door_id = 'A1', then
answer the user." becomes:
[open_door(door_id='A1', floor=2), lock(door_id='A1')]"""
# The worked example (no function of any environment) is what lets a small frozen policy read a
# plan as calls at all: on 40 template notes of the train split the 135M verifier rebuilt 4 without
# it and 19 with it (docs/training.md).


def verify_messages(tools_text: str, scenario: str, awareness_text: str) -> list[dict]:
    """LLM_ver sees info_meta (tools + scenario) and S^a only: never c_his or q (Eq. 9). Ordered
    from most to least shared (the tools of an environment, the scenario of a trajectory, the note
    of a segment), so a local verifier computes the shared part of the prompt once (prefix reuse)."""
    user = (f"Available functions:\n{tools_text}\n\nScenario:\n{scenario or '(none)'}\n\n"
            f"Progress note:\n{awareness_text}\n\nThe next call list:")
    return [{"role": "system", "content": _VERIFY_SYSTEM}, {"role": "user", "content": user}]


_PARAPHRASE_SYSTEM = """You rewrite progress notes. Reword how the user's goal and request are described, using
different wording and sentence structure, but keep every fact: all names, ids, paths, numbers,
quoted values and function names must appear exactly as they are. Keep the <summary>, <plan>
and <rationale> sections. Reply with the rewritten note only."""


def paraphrase_messages(text: str) -> list[dict]:
    return [{"role": "system", "content": _PARAPHRASE_SYSTEM}, {"role": "user", "content": text}]
