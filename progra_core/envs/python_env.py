"""A Python class of the user's as an environment: its public methods are the tools.

The class is user code, trusted as such; what the model writes is not: a call reaches a method
only when its name is one of the listed tools and its argument names are in the method's schema
(:class:`~progra_core.envs.tool_env.ToolEnv`), within the execution budget.

* **Tools**: every public method (no leading ``_``) defined on the class, except ``state``. Each
  needs type hints and a Google-style docstring with an ``Args:`` section: its JSON schema is
  transformers' ``get_json_schema`` of the method, as TRL builds tools from functions.
* **An episode** is a fresh instance: ``cls(**initial_config)`` (``initial_config`` a JSON
  object, or absent for ``cls()``). The constructor is the reset.
* **State** (optional): a method ``state(self)`` returning something JSON-able. Synthesis
  verifies a turn that changed it without reviewers, and a turn passes evaluation only when the
  policy leaves the state the ground truth leaves. Without ``state``, every turn counts as
  read-only (reviewers decide in synthesis) and success compares observations only.
* **Scenario**: the class docstring.

Named from the config (``envs: {shop: "my_envs/shop.py:Shop"}``) or by an entry point of the
``progra.envs`` group that points at the class (see :mod:`progra_core.envs.registry`)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from functools import cache
from typing import Any

from progra_core.calls import Call
from progra_core.envs import budget
from progra_core.envs.base import EnvError, EnvKind, StateTooLarge, json_config
from progra_core.envs.tool_env import ERROR, ToolEnv

__all__ = ["ClassEnv", "class_tools", "python_kind", "STATE_METHOD"]

STATE_METHOD = "state"


def _methods(cls: type) -> dict[str, Any]:
    out = {}
    for name in dir(cls):
        if name.startswith("_") or name == STATE_METHOD:
            continue
        fn = inspect.getattr_static(cls, name)
        if isinstance(fn, staticmethod | classmethod):
            fn = fn.__func__
        if inspect.isfunction(fn):
            out[name] = fn
    return out


@cache
def class_tools(cls: type) -> tuple[dict, ...]:
    """The class's tools as JSON-schema docs (``name``, ``description``, ``parameters``); an
    :class:`EnvError` naming the method whose hints or docstring cannot make a schema."""
    from transformers.utils import get_json_schema

    docs = []
    for name, fn in sorted(_methods(cls).items()):
        try:
            schema = get_json_schema(fn)["function"]
        except Exception as e:
            raise EnvError(f"{cls.__name__}.{name} cannot be a tool: {e} (give every parameter a type hint and "
                           "describe it under 'Args:' in the docstring, or make the method private with a leading _)") from None
        props = dict(schema["parameters"].get("properties") or {})
        props.pop("self", None)
        params = {**schema["parameters"], "properties": props}
        params["required"] = [p for p in params.get("required") or [] if p != "self"]
        docs.append({"name": name, "description": schema.get("description", ""), "parameters": params})
    if not docs:
        raise EnvError(f"{cls.__name__} has no public methods: nothing for the model to call")
    return tuple(docs)


class ClassEnv(ToolEnv):
    """One episode: a fresh instance of the user's class."""

    def __init__(self, name: str, cls: type, initial_config: Any = None):
        super().__init__(name, inspect.cleandoc(cls.__doc__ or ""))
        config = json_config(initial_config, f"{name} initial_config")
        if config is not None and not isinstance(config, dict):
            raise EnvError(f"{name}: initial_config must be a JSON object (the constructor's keyword arguments)")
        self.cls = cls
        try:
            self.instance = budget.run_call(name, lambda: cls(**(config or {})))
        except budget.CallBudgetExceeded as e:
            raise EnvError(f"{name}: building the episode ran past its budget ({e})") from None
        except Exception as e:
            raise EnvError(f"{name}: {cls.__name__}(**initial_config) failed: {type(e).__name__}: {str(e)[:300]}") from None
        self._tools = [dict(t) for t in class_tools(cls)]

    def tools(self) -> list[dict]:
        return self._tools

    def _invoke(self, call: Call, seconds: float) -> Any:
        return getattr(self.instance, call.name)(**json.loads(json.dumps(call.args)))  # the model's values, copied

    def snapshot(self) -> dict[str, Any]:
        """``{"state": <the class's state(), through JSON>}``, or ``{}`` without a state method."""
        fn = getattr(self.instance, STATE_METHOD, None)
        if not callable(fn):
            return {}
        try:
            value = budget.run_call(self.name, fn, budget.STATE_SECONDS)
            text = json.dumps(value, sort_keys=True, default=str)
        except budget.CallBudgetExceeded as e:
            raise StateTooLarge(f"{self.name}.state() {e}") from None
        if len(text) > budget.MAX_OBSERVATION_CHARS:
            raise StateTooLarge(f"{self.name}.state() is {len(text)} characters, above {budget.MAX_OBSERVATION_CHARS}")
        return {"state": json.loads(text)}


def python_kind(name: str, cls: type) -> EnvKind:
    """The env kind of a user class (its tools are checked now, so a bad method fails at load)."""
    if not inspect.isclass(cls):
        raise EnvError(f"env {name!r}: a Python env is a class, got a {type(cls).__name__}")
    class_tools(cls)

    def build(classes: Sequence[str], config: Any, long_context: bool) -> ClassEnv:
        return ClassEnv(name, cls, config)

    try:
        sources = (inspect.getsourcefile(cls) or "",)
    except TypeError:
        sources = ()
    where = f"{sources[0]}:{cls.__qualname__}" if sources and sources[0] else f"{cls.__module__}.{cls.__qualname__}"
    help_ = (f"the Python class {where}; initial_config = its constructor's keyword arguments (a JSON object, "
             "may be null); involved_classes is not used")
    return EnvKind(name, help_, build, error_prefix=ERROR, docs=lambda classes: [dict(t) for t in class_tools(cls)],
                   needs_classes=False, sources=sources)
