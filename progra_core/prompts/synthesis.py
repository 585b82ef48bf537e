"""Synthesis prompts (paper Fig. 6-8, written in our own words) and the message builders of the
four synthesis calls: initial config, next user query, action candidates, review."""

from __future__ import annotations

import json

from progra_core.calls import Call, format_calls

_CONFIG_SYSTEM = """You design starting states for a simulated software environment. You get a few example
initial configurations of the environment. Write ONE new configuration: invent your own content
(names, files, values), but keep the structure and keys of the examples. Do not copy an example.
Reply with the JSON object only: no explanation, no comments, no code fence."""

_QUERY_SYSTEM = """You write the user's side of a conversation with a function-calling assistant. You get a
description of an environment, its functions, its initial configuration and the conversation so
far. Write the user's next request. Rules:
1. Build on the earlier turns: the request should only make sense after them.
2. Keep it small: two to four function calls should solve it.
3. Be explicit and concrete (exact names, paths, values), so exactly one solution exists.
4. Ask for a change to the environment (create, move, edit, send, book...), not only for information.
Reply with the request only, as the user would type it."""

_ACTION_SYSTEM = """You are a function-calling assistant. You get an environment, its functions, the
conversation so far and the user's latest request. Reply with the function calls that fulfil the
request, using only the listed functions, as one Python-style list:
[func_name1(arg1=value1, arg2=value2), func_name2(arg1=value1)]
Reply with the list only."""

_REVIEW_SYSTEM = """You review one turn of a conversation with a function-calling assistant. You get the
user's request, the calls the assistant made and what they returned. Decide whether the calls do
exactly what the user asked, completely and correctly. Answer with one word: yes or no."""

CONFIG_RETRY = "That configuration cannot be used: {error}. Write a corrected configuration: the JSON object only."
ACTION_PREFIX = "["
QUERY_PREFIX = "Please create a"  # local models only: a user asking for a state change, not a narrator
REVIEW_PREFIX = "Answer: "


def _history_text(turns: list[dict]) -> str:
    if not turns:
        return "(no turns yet: this is the first request)"
    out = []
    for i, t in enumerate(turns, 1):
        calls = [c for a in t["actions"] for c in a["calls"]]
        obs = [o for a in t["actions"] for o in a["observations"]]
        out.append(f"Turn {i}\nUser: {t['query']}\nAssistant calls: {format_calls([Call(c['name'], json.loads(c['arguments'])) for c in calls])}"
                   f"\nResults: {'; '.join(obs)}")
    return "\n\n".join(out)


def config_messages(classes: list[str], exemplars: list[dict], scenario: str | None = None) -> list[dict]:
    """``classes``: BFCL's (the config is keyed by class); a plugin env has none and is described by its ``scenario``."""
    shown = "\n\n".join(f"Example {i}:\n{json.dumps(ex, ensure_ascii=False)}" for i, ex in enumerate(exemplars, 1))
    about = (f"Environment classes: {', '.join(classes)}. The top-level keys are class names." if classes else
             f"Environment: {scenario or 'a software environment'}\nThe configuration is a JSON object shaped like the examples.")
    user = (f"{about}\n\n{shown}\n\n"
            "Your new configuration:")
    return [{"role": "system", "content": _CONFIG_SYSTEM}, {"role": "user", "content": user}]


def query_messages(scenario: str, tools_text: str, config: dict, turns: list[dict]) -> list[dict]:
    user = (f"Environment:\n{scenario}\n\nFunctions:\n{tools_text}\n\nInitial configuration:\n"
            f"{json.dumps(config, ensure_ascii=False)}\n\nConversation so far:\n{_history_text(turns)}\n\n"
            "The user's next request:")
    return [{"role": "system", "content": _QUERY_SYSTEM}, {"role": "user", "content": user}]


def action_messages(scenario: str, tools_text: str, turns: list[dict], query: str) -> list[dict]:
    user = (f"Environment:\n{scenario}\n\nFunctions:\n{tools_text}\n\nConversation so far:\n{_history_text(turns)}\n\n"
            f"Latest request: {query}\n\nThe call list:")
    return [{"role": "system", "content": _ACTION_SYSTEM}, {"role": "user", "content": user}]


def review_messages(query: str, calls: list[Call], observations: list[str]) -> list[dict]:
    user = (f"User request: {query}\n\nCalls made: {format_calls(calls)}\n\nResults:\n" + "\n".join(f"- {o}" for o in observations)
            + "\n\nDo these calls do exactly what the user asked? Answer yes or no.")
    return [{"role": "system", "content": _REVIEW_SYSTEM}, {"role": "user", "content": user}]
