"""The composite per-action reward of PAG-RL (Eq. 14) and the trajectory return (Eq. 6).

``r = α_fmt·TEMPLATE + α_schema·SCHEMA + α_acc·SUCCESS − λ·[A has calls]``

* TEMPLATE: the action has the tags the policy was asked for (``<summary>``, ``<think>``,
  ``<answer>`` in that order with awareness; ``<answer>`` after an optional summary and think
  without);
* SCHEMA: the action lists at least one call and every call names a listed function with known
  argument names, all required ones, and values of the declared JSON type (and in its enum);
* SUCCESS: the episode env's own ``success`` against a twin that replayed the ground truth. BFCL:
  the state after the turn equals the ground truth's, and every observation the ground-truth calls
  produce is among the policy's (a multiset check, as BFCL's response checker; the state check
  alone would let a read-only turn be won by doing nothing). τ²: its database check.
* the penalty λ is paid per action that issues calls, so shorter successful episodes score higher.

SUCCESS is credited to the action that closes a turn (its final answer, or the last action when
the budget H runs out): BFCL judges a turn by its end state, not by its intermediate steps.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from progra_core.calls import Call, CallParseError, parse_calls
from progra_core.schemas import tool_functions
from progra_core.scoring import missing_observations

__all__ = ["Action", "parse_action", "template_ok", "schema_ok", "responses_ok", "RewardWeights", "action_reward",
           "discounted_return", "TERMS"]

TERMS = ("fmt", "schema", "acc", "pen")

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


_TYPES = {
    "string": (str,), "integer": (int,), "number": (int, float), "float": (int, float), "boolean": (bool,),
    "array": (list, tuple), "tuple": (list, tuple), "dict": (dict,), "object": (dict,),
}


def _value_ok(value, spec: dict) -> bool:
    kind = (spec or {}).get("type")
    types = _TYPES.get(kind)
    if types is not None:
        if isinstance(value, bool) and bool not in types:  # True is an int in Python, not in JSON
            return False
        if not isinstance(value, types):
            return False
    enum = (spec or {}).get("enum")
    return not enum or value in enum


def schema_ok(calls: Sequence[Call] | None, tools_json: str | list | None) -> bool:
    """Every call names a listed function, uses its parameter names, gives every required one and
    values of the declared types. Positional arguments bind in the documented parameter order."""
    if not calls:
        return False
    docs = {f.get("name"): f.get("parameters") or {} for f in tool_functions(tools_json)}
    for c in calls:
        if c.name not in docs:
            return False
        props = docs[c.name].get("properties") or {}
        names = list(props)
        if len(c.positional) > len(names):
            return False
        given = dict(zip(names, c.positional, strict=False))
        if set(given) & set(c.args):
            return False
        given.update(c.args)
        if any(k not in props for k in given) or any(r not in given for r in docs[c.name].get("required") or []):
            return False
        if not all(_value_ok(v, props[k]) for k, v in given.items()):
            return False
    return True


def responses_ok(target: Sequence[str], got: Sequence[str]) -> bool:
    """Every ground-truth observation appears among the policy's (with multiplicity, any order)."""
    return not missing_observations(target, got)


@dataclass(frozen=True)
class RewardWeights:
    """α_fmt, α_schema, α_acc, λ and γ of Eq. 14 / Eq. 6 (all from ``GRPOConfig``)."""

    alpha_fmt: float = 0.1
    alpha_schema: float = 0.2
    alpha_acc: float = 1.0
    penalty: float = 0.02
    gamma: float = 1.0

    @classmethod
    def from_config(cls, cfg) -> RewardWeights:
        return cls(cfg.alpha_fmt, cfg.alpha_schema, cfg.alpha_acc, cfg.penalty, cfg.gamma)


def action_reward(fmt: bool, schema: bool, acc: bool, has_calls: bool, w: RewardWeights) -> dict[str, float]:
    """The four terms of Eq. 14 for one action (the penalty is stored negative, so terms sum to r)."""
    return {"fmt": w.alpha_fmt * fmt, "schema": w.alpha_schema * schema, "acc": w.alpha_acc * acc,
            "pen": -w.penalty * has_calls}


def discounted_return(terms: Sequence[dict[str, float]], gamma: float) -> dict[str, float]:
    """R(τ) = Σ_t γ^t r_t (Eq. 6), kept per term so each term's curve can be plotted; ``total`` is R."""
    out = {k: 0.0 for k in TERMS}
    for t, r in enumerate(terms):
        for k in TERMS:
            out[k] += (gamma ** t) * r[k]
    out["total"] = sum(out[k] for k in TERMS)
    return out
