"""What a plugin environment shares, whatever serves its tools (a Python class of the user's, an
MCP server): tools described by JSON schemas, one call at a time within the execution budget,
bounded observations, and BFCL's success rule (same state, every expected observation seen).

A subclass says how to list its tools (:meth:`ToolEnv.tools`), how to run one checked call
(:meth:`ToolEnv._invoke`) and what its state is (:meth:`ToolEnv.snapshot`; ``{}`` when the
environment exposes none: every turn then counts as read-only). Everything else here is the
:class:`~progra_core.envs.base.Env` protocol once: a call whose name is not a listed tool, or
whose arguments the tool's schema does not name, becomes an error observation without reaching
user code; a result above :data:`~progra_core.envs.budget.MAX_OBSERVATION_CHARS` too."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from progra_core.calls import Call
from progra_core.envs import budget
from progra_core.envs.base import missing_observations, parse_step

__all__ = ["ToolEnv", "ToolFailed", "observation", "bind", "ERROR"]

ERROR = "Error: "  #: how a plugin env's observation of a failing call starts


class ToolFailed(Exception):
    """Raised by :meth:`ToolEnv._invoke` for a call the tool refused: its message is the error
    observation, word for word (an exception from user code is reported with its type)."""


def observation(result: Any) -> str:
    """A tool's return value as the model reads it: text as-is, anything else as JSON (``str``
    where JSON cannot say it)."""
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(result)


def bind(tools: Sequence[dict], call: Call) -> Call:
    """``call`` with positional arguments bound to its tool's parameters in schema order
    (unchanged when they cannot be): the resolve of every env whose tools are JSON schemas."""
    tool = next((t for t in tools if t.get("name") == call.name), None)
    if tool is None or not call.positional:
        return call
    params = list((tool.get("parameters") or {}).get("properties") or {})
    if len(call.positional) > len(params) or set(params[:len(call.positional)]) & set(call.args):
        return call
    return Call(call.name, {**dict(zip(params, call.positional, strict=False)), **call.args}, ())


class ToolEnv:
    """One episode of a plugin environment (see the module docstring)."""

    name = "plugin"

    def __init__(self, name: str, scenario: str = ""):
        self.name = name
        self._scenario = scenario
        self.history: list[tuple[Call, str]] = []
        self.clock = budget.Clock()
        self.errors = 0

    # -- what a subclass provides -----------------------------------------------------------------

    def tools(self) -> list[dict]:
        raise NotImplementedError

    def _invoke(self, call: Call, seconds: float) -> Any:
        """Run a call whose name and argument names were checked; its raw result."""
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any]:
        return {}

    # -- the Env protocol -------------------------------------------------------------------------

    def scenario(self) -> str:
        return self._scenario

    def _schema(self, name: str) -> dict | None:
        return next((t for t in self.tools() if t.get("name") == name), None)

    def resolve(self, call: Call) -> Call:
        """Positional arguments bound to the tool's parameters in schema order."""
        return bind(self.tools(), call)

    def _refusal(self, call: Call) -> str | None:
        tool = self._schema(call.name)
        if tool is None:
            names = ", ".join(t.get("name", "?") for t in self.tools())
            return f"there is no tool named {call.name[:80]!r} (tools: {names[:400]})"
        if call.positional:
            return f"{call.name}() got more positional arguments than it has parameters"
        schema = tool.get("parameters") or {}
        props = schema.get("properties") or {}
        unknown = sorted(set(call.args) - set(props))
        if unknown and schema.get("additionalProperties", False) is False:
            return f"{call.name}() got unexpected arguments {unknown[:5]}"
        missing = [p for p in schema.get("required") or [] if p not in call.args]
        if missing:
            return f"{call.name}() is missing required arguments {missing[:5]}"
        return None

    def execute_one(self, call: Call) -> str:
        call = self.resolve(call)
        seconds, spent = self.clock.allowance()
        if refused := self._refusal(call):
            obs = ERROR + refused
        elif spent:
            obs = ERROR + spent
        else:
            start = time.monotonic()
            try:
                obs = observation(budget.run_call(self.name, lambda: self._invoke(call, seconds), seconds))
                if len(obs) > budget.MAX_OBSERVATION_CHARS:
                    obs = (f"{ERROR}{budget.MARK}the result has {len(obs)} characters, above the limit of "
                           f"{budget.MAX_OBSERVATION_CHARS}")
            except budget.CallBudgetExceeded as e:
                obs = f"{ERROR}{e}"
            except ToolFailed as e:
                obs = f"{ERROR}{str(e)[:2000]}"
            except Exception as e:  # a failing tool is an observation, never an exception
                obs = f"{ERROR}{type(e).__name__}: {str(e)[:2000]}"
            finally:
                self.clock.spend(time.monotonic() - start)
        self.errors += obs.startswith(ERROR)
        self.history.append((call, obs))
        return obs

    def record_stopped(self, call: Call, observation: str, seconds: float) -> None:
        """A call stopped outside this env (its worker was killed at the budget)."""
        self.clock.spend(seconds)
        self.errors += 1
        self.history.append((call, observation))

    def execute(self, calls: Sequence[Call] | str) -> list[str]:
        calls, error = parse_step(calls)
        if error:
            return [error]
        self.clock.start_action()
        try:
            return [self.execute_one(c) for c in calls]
        finally:
            self.clock.end_action()

    def same_state(self, other: Any) -> bool:
        return isinstance(other, ToolEnv) and other.name == self.name and self.snapshot() == other.snapshot()

    def success(self, target: Any, expected: Sequence[str] = (), observed: Sequence[str] = ()) -> bool:
        """BFCL's rule: the state the ground truth leaves, and every observation it saw."""
        return self.same_state(target) and not missing_observations(expected, observed)
