"""The environment protocol every benchmark's executor satisfies, and what all envs share: the
build error, JSON configs, call-text parsing and BFCL's multiset response check. The factory
that picks a concrete env is :mod:`progra_core.envs.factory`.

Segmentation, rollouts, rewards and evaluation talk to an :class:`Env`, never to a benchmark:
they hand it parsed :class:`~progra_core.calls.Call` objects (or call text, which it parses with
``ast``), read one observation per call, and compare its state with a twin that replayed the
ground truth. Every constructed env is its own episode: no state is shared between instances.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from progra_core.calls import Call, CallParseError, parse_calls

__all__ = ["Env", "EnvKind", "EnvError", "StateTooLarge", "CallBudgetError", "json_config", "missing_observations", "parse_step"]


class EnvError(ValueError):
    """The environment cannot be built (unknown class, config the class rejects)."""


class StateTooLarge(EnvError):
    """A state read passed its bounds (BFCL: :data:`~progra_core.envs.budget.MAX_STATE_NODES`
    values or :data:`~progra_core.envs.budget.MAX_STATE_DEPTH` levels, e.g. copies that share
    children, so the paths double with each copy; any env: ``STATE_SECONDS``): an error for the
    caller to report, never a hang."""


class CallBudgetError(EnvError):
    """Ground truth whose call the execution budget refused or stopped (a record, not the run, fails)."""


def json_config(raw: Any, what: str) -> Any:
    """A config given as JSON text or already parsed; bad JSON is an :class:`EnvError`."""
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise EnvError(f"{what} is not valid JSON: {e}") from None


@runtime_checkable
class Env(Protocol):
    """One episode of an executable benchmark environment."""

    name: str
    history: list[tuple[Call, str]]

    def tools(self) -> list[dict]:
        """Function docs the agent may call (JSON-schema dicts with name/description/parameters)."""

    def scenario(self) -> str:
        """What the agent is told about the environment (BFCL: class descriptions; τ²: the policy)."""

    def resolve(self, call: Call) -> Call:
        """The call with positional arguments bound to parameter names (unchanged if it cannot bind)."""

    def execute_one(self, call: Call) -> str:
        """Run one call; a bad call becomes an error observation, never an exception."""

    def execute(self, calls: Sequence[Call] | str) -> list[str]:
        """Run calls in order (text is parsed with ``ast`` first); one observation per call."""

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state, what the benchmark's own state check compares."""

    def same_state(self, other: Any) -> bool:
        """The benchmark's state check against another episode of the same task."""

    def success(self, target: Any, expected: Sequence[str], observed: Sequence[str]) -> bool:
        """SUCCESS of a turn (Eq. 14): this env against ``target`` (the ground truth replayed), given
        the ground truth's observations and the policy's."""


def parse_step(calls: Sequence[Call] | str) -> tuple[list[Call], str | None]:
    """What every env's ``execute`` takes: parsed calls, or text parsed here with ``ast``. A parse
    error comes back as the step's single observation instead."""
    if not isinstance(calls, str):
        return list(calls), None
    try:
        return parse_calls(calls), None
    except CallParseError as e:
        return [], f"Error during parsing: {e}"




def missing_observations(expected: Sequence[str], got: Sequence[str]) -> list[str]:
    """BFCL's response check: the expected observations not found among ``got`` (a multiset:
    each found item is used once; order does not matter)."""
    pool = Counter(got)
    out = []
    for item in expected:
        if pool[item] > 0:
            pool[item] -= 1
        else:
            out.append(item)
    return out


def _any(involved_classes: Sequence[str]) -> None:
    return None


@dataclass(frozen=True)
class EnvKind:
    """How to build one kind of env (registered by name in :mod:`progra_core.envs.registry`)."""

    name: str  #: the ``env`` value of its rows
    help: str  #: what ``involved_classes`` and ``initial_config`` mean for it
    build: Callable[[Sequence[str], Any, bool], Env]  #: ``(involved_classes, initial_config, long_context)`` -> a fresh env
    check: Callable[[Sequence[str]], None] = _any  #: an ``EnvError`` for ``involved_classes`` it cannot build
    error_prefix: str = "Error: "  #: how its observation of a failing call starts
    #: ``involved_classes`` -> the tool docs of every episode, when they do not depend on the episode
    docs: Callable[[Sequence[str]], list[dict]] | None = None
    needs_classes: bool = True  #: a row must name ``involved_classes`` (BFCL classes, the τ² domain)
    sources: tuple[str, ...] = ()  #: files whose bytes are the env's code (a plugin's): part of fingerprints
