"""The one factory that builds an episode's environment from a ``trajectories`` row (``env``,
``involved_classes``, ``initial_config``) and decides where it lives: in a killable worker process
(:mod:`progra_core.envs.isolated`) or in this process; which env a row's ``env`` names is
:mod:`progra_core.envs.registry`'s answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from progra_core.envs import registry
from progra_core.envs.base import Env
from progra_core.envs.isolated import IsolatedEnv

__all__ = ["make_env"]


def make_env(kind: str | None, involved_classes: Sequence[str], initial_config: Any, long_context: bool = False,
             isolated: bool = True) -> Env:
    """A fresh env for one episode of a ``trajectories`` row (``env`` column: a registered kind).
    ``isolated`` (every env that executes calls): the env lives in a worker process that is
    killed at the budget; in-process only where nothing runs (``resolve`` of argument names)."""
    if not isolated:
        return registry.build(kind, involved_classes, initial_config, long_context)
    registry.check(kind, involved_classes)
    return IsolatedEnv(kind, involved_classes, initial_config, long_context)
