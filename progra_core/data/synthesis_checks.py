"""Synthesis' pure checks (Appendix B): the K-candidate majority vote, state change, error
observations, reviewer verdicts and initial-config validation. No LLM calls, no I/O: the loop in
:mod:`progra_core.data.synthesize` composes them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from progra_core.calls import Call, CallParseError, balanced_span, parse_calls, schema_equal
from progra_core.envs.base import EnvError
from progra_core.envs.bfcl import STATELESS_CLASSES, BFCLEnv, StateTooLarge
from progra_core.envs.factory import make_env
from progra_core.prompts.synthesis import REVIEW_PREFIX

__all__ = ["Vote", "vote", "state_changed", "is_error_observation", "review_verdict", "review_majority", "extract_json",
           "validate_config"]


@dataclass
class Vote:
    """Outcome of the majority vote over K candidates."""

    calls: list[Call] | None  # the accepted call list, None without consensus
    parsed: int
    groups: int
    top_share: float


def vote(candidates: list[str | None], k: int | None = None, threshold: float = 0.5, resolve=None) -> Vote:
    """Group parsable, non-empty candidates by ``schema_equal``; accept the largest group when it is
    the unique largest and holds at least ``threshold`` of all K candidates (unparsable ones count
    in K but vote for nothing)."""
    k = k or len(candidates)
    groups: list[list[list[Call]]] = []
    parsed = 0
    for text in candidates:
        if text is None:
            continue
        try:
            calls = parse_calls(text)
        except CallParseError:
            continue
        if not calls:
            continue
        if resolve is not None:
            calls = [resolve(c) for c in calls]
        parsed += 1
        for g in groups:
            if schema_equal(g[0], calls):
                g.append(calls)
                break
        else:
            groups.append([calls])
    if not groups:
        return Vote(None, 0, 0, 0.0)
    sizes = sorted((len(g) for g in groups), reverse=True)
    top = max(groups, key=len)
    share = sizes[0] / max(k, 1)
    unique = len(sizes) == 1 or sizes[0] > sizes[1]
    return Vote(top[0] if unique and share >= threshold else None, parsed, len(groups), share)


def state_changed(before: dict, after: dict) -> bool:
    """Deterministic tier of verification: did the public state of any instance change?"""
    return json.dumps(before, sort_keys=True, default=str) != json.dumps(after, sort_keys=True, default=str)


def is_error_observation(obs: str) -> bool:
    """BFCL reports failures either as our dispatcher's text or as ``{"error": ...}`` results."""
    if obs.startswith(("Error during execution", "Error during parsing")):
        return True
    if obs.startswith("{"):
        try:
            value = json.loads(obs)
        except json.JSONDecodeError:
            return False
        return isinstance(value, dict) and "error" in value
    return False


_VERDICT = re.compile(r"\b(yes|no)\b", re.I)


def review_verdict(text: str | None) -> bool | None:
    """A reviewer's yes/no (the first one it says), None when it says neither."""
    if not text:
        return None
    m = _VERDICT.search(text.removeprefix(REVIEW_PREFIX))
    return None if m is None else m.group(1).lower() == "yes"


def review_majority(answers: list[str | None]) -> tuple[int, int, bool]:
    """(yes, no, passed): passed needs yes votes from more than half of all R reviewers, so
    abstentions and failed calls count against."""
    verdicts = [review_verdict(a) for a in answers]
    yes, no = sum(v is True for v in verdicts), sum(v is False for v in verdicts)
    return yes, no, yes * 2 > len(answers)


def extract_json(text: str) -> str:
    """The JSON object in a generator answer: inside a code fence, else from the first ``{`` to the
    matching ``}`` (strings respected), else the text."""
    fence = re.search(r"```(?:json)?\s*\n?(.*?)```", text, re.S)
    if fence:
        text = fence.group(1)
    span = balanced_span(text, "{", "}", quotes='"')
    if span is not None:
        return span
    start = text.find("{")
    return text.strip() if start < 0 else text[start:].strip()


def _default_snapshot(cls: str) -> Any:
    return BFCLEnv({cls: {}}, [cls]).snapshot().get(cls)


def _json_object(text: str | None, keyed: str = "") -> tuple[dict | None, str | None]:
    """The JSON object a generator answered, or the error to feed back."""
    if not text or not text.strip():
        return None, "empty: the answer was empty"
    try:
        config = json.loads(extract_json(text))
    except json.JSONDecodeError as e:
        return None, f"invalid_json: not valid JSON ({e.msg} at position {e.pos})"
    if not isinstance(config, dict):
        return None, f"not_object: the JSON must be an object{keyed}, got {type(config).__name__}"
    return config, None


def validate_config(text: str | None, classes: list[str], exemplars: list[dict] = ()) -> tuple[dict | None, str | None]:
    """(config, None) or (None, error). The error names the problem in words the generator can act
    on; its first word is a stable code."""
    config, err = _json_object(text, " keyed by class name")
    if err is not None:
        return None, err
    stateful = [c for c in classes if c not in STATELESS_CLASSES]
    unknown = sorted(set(config) - set(classes))
    if unknown:
        return None, f"unknown_class: keys {unknown} are not among the classes {classes}"
    missing = [c for c in stateful if not isinstance(config.get(c), dict) or not config.get(c)]
    if missing:
        return None, f"missing_class: give a non-empty object for {missing}"
    try:
        env = make_env("bfcl", classes, config)
    except EnvError as e:
        return None, f"class_rejected: {e}"
    try:
        snap = env.snapshot()
    except StateTooLarge as e:
        return None, f"state_too_large: {e}"
    inert = [c for c in stateful if snap.get(c) == _default_snapshot(c)]
    if inert:
        return None, f"default_state: the configuration of {inert} sets nothing the class reads (check the key names)"
    if any(config == ex for ex in exemplars):
        return None, "copied_exemplar: the configuration is a copy of an example; invent new content"
    return config, None


def validate_plugin_config(text: str | None, env: str, exemplars: list[dict] = ()) -> tuple[dict | None, str | None]:
    """:func:`validate_config` for a plugin env: a JSON object, not a copy of an example, that
    the env accepts (its constructor or server starts with it)."""
    config, err = _json_object(text)
    if err is not None:
        return None, err
    if any(config == ex for ex in exemplars):
        return None, "copied_exemplar: the configuration is a copy of an example; invent new content"
    try:
        make_env(env, [], config)
    except EnvError as e:
        return None, f"class_rejected: {str(e)[:300]}"
    return config, None
