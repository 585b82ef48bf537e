"""The target policy's format (Fig. 10): the system prompt with info_meta, the awareness-guided
turn message of Eq. 12, the raw-prefix prompt of a segment, the SFT targets (a step's calls, a
turn's closing answer), and how an output is read back (:func:`decode_calls`). SFT data, the
rollouts and evaluation all use these, with the one tool-docs rendering the profile chooses
(``tool_docs``). Kept apart from the data roles' prompts, so their edits do not change the
awareness stage's code version."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from progra_core.calls import Call, CallParseError, parse_calls
from progra_core.prompts.tools import DocStyle, render_tools

__all__ = ["policy_system", "progress_query", "build_prompt", "format_policy_target", "format_turn_end", "TURN_DONE", "ANSWER_STOP",
           "Action", "parse_action", "decode_calls", "visible_text", "template_ok", "turn_messages", "earlier_turns",
           "progress_note", "calls_in_words", "forced_answer", "cut_loop"]

_POLICY_SYSTEM = """You call functions to do what the user asks. At each step write three sections:
<summary>the user's goal, the values confirmed so far, the calls made and their results, the current state, and what is left</summary>
<think>which function comes next and how its arguments are filled</think>
<answer>[func_name(arg=value, ...)]</answer>
Rules: call only the functions below, with their exact parameter names (func_name and arg are placeholders). If a
required value is missing, answer "I need more information."; if no function fits, answer "There are no appropriate
functions.". Calls run in order and a failed call stops the rest: read the results before the next step and never repeat
a failed call. When the request is done, call nothing: answer the user in plain words in <answer>; that ends your turn.

Functions:
{tools}"""


_PLAIN_POLICY_SYSTEM = """You call functions to do what the user asks. At each step think first, then act:
<think>what is done, what is left, and which function with which arguments comes next</think>
<answer>[func_name(arg=value, ...)]</answer>
Rules: call only the functions below, with their exact parameter names (func_name and arg are placeholders). If a
required value is missing, answer "I need more information."; if no function fits, answer "There are no appropriate
functions.". When the request is done, call nothing: answer the user in plain words in <answer>; that ends your turn.

Functions:
{tools}"""

#: The closing answer of a turn whose data has no reply (BFCL, synthesized): plain words, no call.
TURN_DONE = "I have completed your request."

#: Where every decoder stops an action (next-call, BFCL, PAG-RL rollouts alike): what follows a
#: closed answer is never read, so sampling it only costs time and breaks TEMPLATE's format.
ANSWER_STOP = "</answer>"


def policy_system(tools_json: str | list | None, scenario: str | None = None, docs_style: DocStyle = "json",
                  awareness: bool = True) -> str:
    """The policy's system prompt (info_meta): with ``awareness`` the Fig. 10 format
    (summary, think, answer), without it the plain CoT format the baselines use."""
    template = _POLICY_SYSTEM if awareness else _PLAIN_POLICY_SYSTEM
    text = template.format(tools=render_tools(tools_json, style=docs_style))
    return text + (f"\n\nScenario:\n{scenario}" if scenario else "")


def progress_query(query: str, progress: str | None) -> str:
    """The user message of an awareness-guided turn (Eq. 12): the policy's own latest summary
    stands in for every earlier turn, followed by the current request Q_i."""
    if not progress:
        return query
    return f"Progress so far (your own summary):\n{progress}\n\nCurrent request:\n{query}"


def turn_messages(system: str, query: str, progress: str | None, steps: list[dict] | None = None) -> list[dict]:
    """The awareness-guided context of a step (Eq. 12), the one renderer of SFT rows, PAG-RL
    rollouts and evaluation: info_meta, the latest progress summary with the current request
    Q_i, and this turn's earlier steps (the policy's own outputs and their results)."""
    return [{"role": "system", "content": system}, {"role": "user", "content": progress_query(query, progress)},
            *(steps or [])]


def calls_in_words(calls: list[Call]) -> str:
    """``cd with folder = 'docs'; then ls with no arguments``: calls in words, no call syntax."""
    out = []
    for c in calls:
        vals = [repr(v) for v in c.positional] + [f"{k} = {v!r}" for k, v in c.args.items()]
        out.append(f"{c.name} with {', '.join(vals)}" if vals else f"{c.name} with no arguments")
    return "; then ".join(out) or "nothing"


#: one earlier turn as a progress note tells it: the request, the calls that served it, their results
Turn = tuple[str, list[Call], list[str]]


def earlier_turns(history: list[dict] | None) -> list[Turn]:
    """(request, calls, results) per earlier turn of a raw conversation prefix (c_his): each user
    message opens a turn, assistant call lists add their calls, tool messages their results."""
    out: list[Turn] = []
    for m in history or []:
        if m["role"] == "user":
            out.append((m["content"] or "", [], []))
        elif m["role"] == "assistant" and out:
            calls, _ = decode_calls(m["content"])
            out[-1][1].extend(calls or [])
        elif m["role"] == "tool" and out:
            out[-1][2].append(m["content"] or "")
    return out


#: earlier turns a progress note spells out; older ones are counted (the note stays short)
NOTE_TURNS = 2
_QUERY_CHARS, _RESULT_CHARS = 120, 80


def _short(text: str, limit: int = _QUERY_CHARS) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def progress_note(turns: list[Turn]) -> str | None:
    """What is done after these turns, as the summary a turn's closing answer carries into the
    next turn (and SFT shows as that turn's progress): each request, the calls that served it and
    what they returned (clipped)."""
    if not turns:
        return None
    shown = turns[-NOTE_TURNS:]
    n = len(turns) - len(shown)
    head = ("1 earlier request was completed. " if n == 1 else f"{n} earlier requests were completed. ") if n else ""
    parts = []
    for q, calls, results in shown:
        got = "; ".join(_short(r, _RESULT_CHARS) for r in results if r)
        parts.append(f"The user asked: {_short(q)} Done: {calls_in_words(calls)}." + (f" Result: {got}" if got else ""))
    return f"{head}{' '.join(parts)} Nothing is left to do for these requests."


def build_prompt(seg: dict, tools_json: str | None = None, awareness: bool = True, docs_style: DocStyle = "json",
                 context: dict | None = None) -> list[dict]:
    """The raw-prefix prompt of a segment: info_meta, c_his, q and this turn's earlier steps.
    ``context`` replaces any of ``history`` / ``query`` / ``prior_steps`` (an augmented example's
    own inputs)."""
    ctx = {k: v for k, v in (context or {}).items() if v is not None}
    seg = {**seg, **ctx}
    system = policy_system(tools_json if tools_json is not None else seg["tools"], seg.get("scenario"), docs_style, awareness)
    return ([{"role": "system", "content": system}] + list(seg.get("history") or []) +
            [{"role": "user", "content": seg["query"]}] + list(seg.get("prior_steps") or []))


def format_policy_target(calls_text: str, summary: str | None = None, plan: str | None = None,
                         rationale: str | None = None) -> str:
    """The Fig. 10 target: ``<summary>S^a</summary><think>rationale</think><answer>[calls]</answer>``;
    without awareness (cold start) only the answer."""
    if summary is None:
        return f"<answer>{calls_text}</answer>"
    s = summary.strip() + (f"\nPlan: {plan.strip()}" if plan else "")
    return f"<summary>{s}</summary>\n<think>{(rationale or '').strip()}</think>\n<answer>{calls_text}</answer>"


def format_turn_end(reply: str | None, turns: list[Turn] | None = None) -> str:
    """The target of the step that closes a turn: a plain answer, no call. With ``turns`` (every
    turn so far, this one last: the awareness format), its summary is :func:`progress_note`, so
    the note carried into the next turn says what is done, this request included."""
    answer = f"<answer>{(reply or TURN_DONE).strip()}</answer>"
    if turns is None:
        return answer
    think = "The request is complete, so I answer the user instead of calling a function."
    return f"<summary>{progress_note(turns)}</summary>\n<think>{think}</think>\n{answer}"


#: the tail :func:`cut_loop` looks for earlier in the text (about a dozen tokens)
LOOP_TAIL_CHARS = 40


def cut_loop(text: str, tail: int = LOOP_TAIL_CHARS) -> str:
    """``text`` without the loop it ends in: cut where its last ``tail`` characters first appear
    (a generation stopped for looping ends in copies of one run; nothing changes otherwise)."""
    if len(text) < 2 * tail:
        return text
    first = text.find(text[-tail:])
    return text[:first] if first < len(text) - tail else text


def forced_answer(text: str) -> str | None:
    """Budget forcing for an action that spent its tokens (or looped) inside ``<summary>`` or
    ``<think>`` before writing any ``<answer>``: the text with its loop cut, the open section
    closed and ``<answer>`` opened, for the model to continue from. None when there is nothing to
    force: an answer was begun, or the text never opened a section (another prompt's format)."""
    if "<answer>" in text:
        return None
    opened = [t for t in ("summary", "think") if f"<{t}>" in text and f"</{t}>" not in text.split(f"<{t}>", 1)[1]]
    if not opened:
        return None
    return f"{cut_loop(text).rstrip()}</{opened[-1]}>\n<answer>"


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


_REASONING = re.compile(r"<(think|summary)>.*?(?:</\1>|$)", re.S)


def visible_text(text: str | None) -> str:
    """What a reader of the output sees: the ``<answer>`` region if tagged, else the text without
    ``<think>``/``<summary>`` regions."""
    answer = _region("answer", text or "")
    return (answer if answer is not None else _REASONING.sub("", text or "")).strip()


def decode_calls(text: str | None) -> tuple[list[Call] | None, str | None]:
    """The calls an output issues, or ``(None, why not)``: the one decoder of RL, evaluation and
    τ². The visible text is parsed with ``ast`` (never ``eval``), then with BFCL's leniency
    (backticks stripped, a missing ``[``/``]`` added). No calls (a message, ``[]``, prose) means
    the output answers the user and ends the turn."""
    body = visible_text(text)
    if not body:
        return None, "empty output"
    try:
        return parse_calls(body) or None, None
    except CallParseError:
        pass
    wrapped = body.strip("`\n ")
    wrapped = ("" if wrapped.startswith("[") else "[") + wrapped + ("" if wrapped.endswith("]") else "]")
    try:
        return parse_calls(wrapped) or None, None
    except CallParseError as e:
        return None, str(e)


def parse_action(text: str) -> Action:
    """Split an output into summary / think / answer and decode its calls (:func:`decode_calls`).
    The template term, not the decoder, is what punishes missing tags."""
    a = Action(text=text, summary=_region("summary", text), think=_region("think", text), answer=_region("answer", text))
    a.calls, a.parse_error = decode_calls(text)
    return a


def template_ok(text: str, awareness: bool) -> bool:
    return bool((_AWARE if awareness else _PLAIN).match(text))
