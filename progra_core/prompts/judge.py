"""The turn-level judge's prompt (after TARL: an LLM adjudicates each finished turn) and how its
verdict is read back."""

from __future__ import annotations

import re

__all__ = ["JUDGE_PREFIX", "VERDICTS", "judge_messages", "parse_verdict"]

_JUDGE_SYSTEM = """You review one finished turn of a conversation between a user and a function-calling
assistant. You see the user's request, every call the assistant made with its result, and the
assistant's closing answer. Decide whether the assistant did what the request asked, with the right
functions and values, no more and no less:
1 = the request is done correctly;
0 = partly done, or you cannot tell;
-1 = wrong, not done, or calls that should not have been made.
Reply with one line: verdict: <1, 0 or -1>"""

#: Prefill of the answer; local models then choose among the verdicts by likelihood.
JUDGE_PREFIX = "verdict: "
VERDICTS = ("1", "0", "-1")
_VERDICT = re.compile(r"verdict\s*[:=]\s*([+-]?[01])\b", re.I)


def judge_messages(query: str, steps: list[tuple[list[str], list[str]]], answer: str | None) -> list[dict]:
    """The turn as the judge sees it: the request, each step's calls and results, the answer."""
    lines = [f"User request:\n{query}", "", "What the assistant did:"]
    if not steps:
        lines.append("(no call)")
    for i, (calls, results) in enumerate(steps, 1):
        lines.append(f"{i}. calls: {', '.join(calls)}")
        for r in results:
            lines.append(f"   result: {r[:400]}")
    lines += ["", f"Closing answer:\n{answer or '(none: the turn was cut off)'}"]
    return [{"role": "system", "content": _JUDGE_SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def parse_verdict(text: str | None) -> int | None:
    """-1, 0 or 1 from the judge's answer (the last ``verdict: x`` it wrote), None without one."""
    found = _VERDICT.findall(text or "")
    return int(found[-1]) if found else None
