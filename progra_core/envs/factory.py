"""The one factory that builds an episode's environment from a ``trajectories`` row (``env``,
``involved_classes``, ``initial_config``) and decides where it lives: in a killable worker process
(:mod:`progra_core.envs.isolated`) or in this process; which env a row's ``env`` names is
:mod:`progra_core.envs.registry`'s answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from progra_core.calls import Call
from progra_core.envs import registry
from progra_core.envs.base import Env
from progra_core.envs.isolated import IsolatedEnv
from progra_core.envs.tool_env import bind

__all__ = ["make_env", "resolver"]


def make_env(kind: str | None, involved_classes: Sequence[str], initial_config: Any, long_context: bool = False,
             isolated: bool = True) -> Env:
    """A fresh env for one episode of a ``trajectories`` row (``env`` column: a registered kind).
    ``isolated`` (every env that executes calls): the env lives in a worker process that is
    killed at the budget; in-process only where nothing runs (``resolve`` of argument names)."""
    if not isolated:
        return registry.build(kind, involved_classes, initial_config, long_context)
    registry.check(kind, involved_classes)
    return IsolatedEnv(kind, involved_classes, initial_config, long_context)


def resolver(kind: str | None, involved_classes: Sequence[str]) -> Callable[[Call], Call] | None:
    """How a row's calls get their positional arguments named, running nothing: from the tool
    docs where the kind knows them (plugins: no episode, no server started), else an in-process
    env's ``resolve``; None when neither can be had."""
    try:
        k = registry.get(kind)
        if k.docs is not None:
            return partial(bind, k.docs(involved_classes))
        if not involved_classes:
            return None
        return make_env(kind, involved_classes, None, isolated=False).resolve
    except Exception:  # noqa: BLE001 - an unbuildable row compares calls as written
        return None
