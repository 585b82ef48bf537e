"""A hermetic, eval-free executor over BFCL's multi-turn API classes.

BFCL's own executor turns call strings into Python source and runs it with ``eval`` in module
globals, keeping instances between episodes. ``BFCLEnv`` keeps BFCL's classes and its exact
observation format but dispatches parsed :class:`~progra_core.calls.Call` objects to bound public
methods of the involved classes only. Each ``BFCLEnv`` owns fresh instances: nothing is shared
between episodes.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import importlib
import importlib.util
import inspect
import json
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from progra_core.calls import Call
from progra_core.envs import budget
from progra_core.envs.base import EnvError, StateTooLarge, json_config, missing_observations, parse_step
from progra_core.envs.registry import EnvKind, register

__all__ = ["BFCLEnv", "BFCL_CLASSES", "STATELESS_CLASSES", "function_docs", "class_description", "EnvError", "StateTooLarge"]

_PREFIX = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code"
_DOCS_PKG = "bfcl_eval"

#: The executable classes of BFCL's multi-turn categories and the module that defines each.
BFCL_CLASSES: dict[str, str] = {
    "GorillaFileSystem": f"{_PREFIX}.gorilla_file_system",
    "MathAPI": f"{_PREFIX}.math_api",
    "MessageAPI": f"{_PREFIX}.message_api",
    "TwitterAPI": f"{_PREFIX}.posting_api",
    "TicketAPI": f"{_PREFIX}.ticket_api",
    "TradingBot": f"{_PREFIX}.trading_bot",
    "TravelAPI": f"{_PREFIX}.travel_booking",
    "VehicleControlAPI": f"{_PREFIX}.vehicle_control",
}
_DOC_FILES = {
    "GorillaFileSystem": "gorilla_file_system.json",
    "MathAPI": "math_api.json",
    "MessageAPI": "message_api.json",
    "TwitterAPI": "posting_api.json",
    "TicketAPI": "ticket_api.json",
    "TradingBot": "trading_bot.json",
    "TravelAPI": "travel_booking.json",
    "VehicleControlAPI": "vehicle_control.json",
}
#: Classes without state: BFCL never calls ``_load_scenario`` on them.
STATELESS_CLASSES = frozenset({"MathAPI"})


def _data_dir():
    spec = importlib.util.find_spec(_DOCS_PKG)
    if spec is None or spec.origin is None:
        raise ImportError("bfcl-eval is not installed: pip install --no-deps bfcl-eval==2026.3.23")
    return Path(spec.origin).parent / "data"


@cache
def _docs_for(class_name: str) -> tuple[str, ...]:
    path = _data_dir() / "multi_turn_func_doc" / _DOC_FILES[class_name]
    return tuple(line for line in path.read_text().splitlines() if line.strip())


def function_docs(involved_classes: Sequence[str]) -> list[dict]:
    """BFCL's function docs (JSON schema dicts) for the classes, in BFCL's order."""
    out: list[dict] = []
    for c in involved_classes:
        if c not in _DOC_FILES:
            raise EnvError(f"unknown BFCL class {c!r}; known: {sorted(_DOC_FILES)}")
        out.extend(json.loads(line) for line in _docs_for(c))
    return out


@cache
def _class(class_name: str):
    if class_name not in BFCL_CLASSES:
        raise EnvError(f"unknown BFCL class {class_name!r}; known: {sorted(BFCL_CLASSES)}")
    return getattr(importlib.import_module(BFCL_CLASSES[class_name]), class_name)


def class_description(class_name: str) -> str:
    """The class's own one-paragraph description (``_api_description``), used as the scenario."""
    inst = _class(class_name)()
    return getattr(inst, "_api_description", class_name)


def _observation(result: Any) -> str:
    """BFCL's formatting of a return value: strings as-is, dicts as JSON (else ``str``), rest ``str``."""
    if type(result) is str:  # noqa: E721 - BFCL checks the exact type
        return result
    if type(result) is dict:  # noqa: E721
        try:
            return json.dumps(result)
        except Exception:
            return str(result)
    return str(result)


def _jsonable(obj: Any, stack: tuple[int, ...] = (), seen: list[int] | None = None) -> Any:
    """A JSON-able deep copy of instance state; back-references (e.g. a directory's parent) are cut.
    Bounded: at most ``MAX_STATE_NODES`` values and ``MAX_STATE_DEPTH`` levels (:class:`StateTooLarge`)."""
    seen = [0] if seen is None else seen
    seen[0] += 1
    if seen[0] > budget.MAX_STATE_NODES:
        raise StateTooLarge(f"{budget.MARK}the state has more than {budget.MAX_STATE_NODES} values")
    if len(stack) > budget.MAX_STATE_DEPTH:
        raise StateTooLarge(f"{budget.MARK}the state nests deeper than {budget.MAX_STATE_DEPTH} levels")
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else repr(obj)
    if isinstance(obj, (datetime.datetime, datetime.date)):
        return obj.isoformat()
    if isinstance(obj, decimal.Decimal):
        return str(obj)
    if id(obj) in stack:
        return {"$ref": type(obj).__name__}
    stack = (*stack, id(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, stack, seen) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, stack, seen) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((_jsonable(v, stack, seen) for v in obj), key=repr)
    if hasattr(obj, "__dict__"):
        return {
            "$type": type(obj).__name__,
            **{k: _jsonable(v, stack, seen) for k, v in vars(obj).items() if not k.startswith("_") and k != "parent"},
        }
    return repr(obj)


class BFCLEnv:
    """One episode's worth of BFCL API instances.

    ``execute`` returns one observation per call and never raises for a bad call: unknown or
    ambiguous names, wrong arguments and exceptions inside a method become error observations in
    BFCL's own wording (``"Error during execution: ..."``).
    """

    name = "bfcl"

    def __init__(self, initial_config: dict | None, involved_classes: Sequence[str], long_context: bool = False):
        initial_config = json_config(initial_config, "initial_config")
        if initial_config is None:
            initial_config = {}
        if not isinstance(initial_config, dict):
            raise EnvError(f"initial_config must be an object, got {type(initial_config).__name__}")
        if not involved_classes:
            raise EnvError("involved_classes is empty")
        self.initial_config = initial_config
        self.involved_classes = list(dict.fromkeys(involved_classes))
        self.long_context = long_context
        self.instances: dict[str, Any] = {}
        self._methods: dict[str, list[tuple[str, Any]]] = {}
        for cname in self.involved_classes:
            inst = _class(cname)()
            if cname not in STATELESS_CLASSES:
                cfg = initial_config.get(cname, {})
                if not isinstance(cfg, dict):
                    raise EnvError(f"config for {cname} must be an object, got {type(cfg).__name__}")
                try:
                    inst._load_scenario(copy.deepcopy(cfg), long_context=long_context)
                except Exception as e:  # the class rejected the config
                    raise EnvError(f"{cname} cannot load this config: {type(e).__name__}: {e}") from None
            self.instances[cname] = inst
            for mname, method in inspect.getmembers(inst, predicate=inspect.ismethod):
                if not mname.startswith("_"):
                    self._methods.setdefault(mname, []).append((cname, method))
        self.history: list[tuple[Call, str]] = []
        self.clock = budget.Clock()

    # -- dispatch ---------------------------------------------------------------------------

    def _lookup(self, name: str):
        method, _cls, err = self._owner(name)
        return method, err

    def _owner(self, name: str):
        owners = self._methods.get(name)
        if not owners:
            return None, None, f"name '{name}' is not defined"
        if len(owners) > 1:
            return None, None, f"function '{name}' is ambiguous: provided by {', '.join(c for c, _ in owners)}"
        return owners[0][1], owners[0][0], None

    def resolve(self, call: Call) -> Call:
        """The same call with positional arguments bound to parameter names, in signature order.

        Calls that cannot be bound (unknown name, bad arguments) come back unchanged.
        """
        method, _ = self._lookup(call.name)
        if method is None:
            return call
        try:
            bound = inspect.signature(method).bind(*call.positional, **call.args)
        except TypeError:
            return call
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in inspect.signature(method).parameters.values()):
            return call
        return Call(call.name, dict(bound.arguments), ())

    def execute_one(self, call: Call) -> str:
        """One call within the execution budget (:mod:`progra_core.envs.budget`): a runaway call
        or one whose arguments could not finish in it is an error observation."""
        method, cls, err = self._owner(call.name)
        seconds, spent = self.clock.allowance()
        if method is None:
            obs = f"Error during execution: {err}"
        elif spent:
            obs = f"Error during execution: {spent}"
        elif refused := budget.guard_arguments(cls, call.name, call.args, call.positional,
                                               bind=lambda: self.resolve(call).args):
            obs = f"Error during execution: {budget.MARK}refused: {refused}"
        else:
            try:
                # fresh copies, as BFCL's eval of the call text would make: a method that keeps or
                # mutates an argument (post_tweet stores its mentions list) must not alias the Call
                args, kwargs = copy.deepcopy(call.positional), copy.deepcopy(call.args)
                start = time.monotonic()
                try:
                    obs = budget.run_call(cls, lambda: _observation(method(*args, **kwargs)), seconds)
                finally:
                    self.clock.spend(time.monotonic() - start)
                if len(obs) > budget.MAX_OBSERVATION_CHARS:
                    obs = (f"Error during execution: {budget.MARK}the result has {len(obs)} characters, above the limit of "
                           f"{budget.MAX_OBSERVATION_CHARS}")
            except budget.CallBudgetExceeded as e:
                obs = f"Error during execution: {e}"
            except Exception as e:  # a failing call is an observation, never an exception
                obs = f"Error during execution: {e}"
        self.history.append((call, obs))
        return obs

    def record_stopped(self, call: Call, observation: str, seconds: float) -> None:
        """A call stopped outside this env (its worker process was killed at the budget,
        :mod:`progra_core.envs.isolated`): in the history as a failed call, its time spent."""
        self.clock.spend(seconds)
        self.history.append((call, observation))

    def execute(self, calls: Sequence[Call] | str) -> list[str]:
        """Run calls in order; one observation each. Text is parsed first (a parse error becomes a
        single error observation)."""
        calls, error = parse_step(calls)
        if error:
            return [error]
        self.clock.start_action()  # one action: its calls share ACTION_SECONDS
        try:
            return [self.execute_one(c) for c in calls]
        finally:
            self.clock.end_action()

    # -- state ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-able public state per stateful class (what BFCL's state checker compares);
        :class:`StateTooLarge` past the walk's bounds."""
        seen = [0]
        return {
            c: _jsonable({k: v for k, v in vars(inst).items() if not k.startswith("_")}, (), seen)
            for c, inst in self.instances.items()
            if c not in STATELESS_CLASSES
        }

    def tools(self) -> list[dict]:
        """Function docs of the involved classes (BFCL's JSON schemas)."""
        return function_docs(self.involved_classes)

    def scenario(self) -> str:
        return "\n".join(f"{c}: {getattr(i, '_api_description', c)}" for c, i in self.instances.items())

    def success(self, target: BFCLEnv, expected: Sequence[str], observed: Sequence[str]) -> bool:
        """BFCL's two checks for a turn: the state equals the ground truth's, and every observation
        the ground truth produced is among the policy's (a multiset check, as BFCL's response
        checker; the state check alone would let a read-only turn be won by doing nothing)."""
        return self.same_state(target) and not missing_observations(expected, observed)

    def same_state(self, other: BFCLEnv) -> bool:
        """BFCL's state check: every public attribute of every instance compares equal. Within
        ``STATE_SECONDS``: a state too large or too deep to compare in it is not the same state."""
        def compare() -> bool:
            for c, inst in self.instances.items():
                o = other.instances.get(c)
                if o is None or type(o) is not type(inst):
                    return False
                for k in vars(inst):
                    if not k.startswith("_") and getattr(inst, k) != getattr(o, k, object()):
                        return False
            return True
        try:
            return budget.timed(compare, budget.STATE_SECONDS)
        except (budget.CallBudgetExceeded, RecursionError):
            return False


register(EnvKind("bfcl", "involved_classes = BFCL API classes; initial_config = their scenario config (JSON)",
                 lambda classes, config, long_context: BFCLEnv(config, classes, long_context=long_context),
                 error_prefix="Error during execution: "))
