"""The one factory that builds an episode's environment from a ``trajectories`` row (``env``,
``involved_classes``, ``initial_config``) and decides where it lives: in a killable worker process
(:mod:`progra_core.envs.isolated`) or in this process (:mod:`progra_core.envs.inprocess`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from progra_core.envs.base import Env
from progra_core.envs.inprocess import ENV_KINDS, build_env, check_kind
from progra_core.envs.isolated import IsolatedEnv

__all__ = ["ENV_KINDS", "make_env"]


def make_env(kind: str | None, involved_classes: Sequence[str], initial_config: Any, long_context: bool = False,
             isolated: bool = True) -> Env:
    """A fresh env for one episode of a ``trajectories`` row (``env`` column: bfcl or tau2).
    ``isolated`` (every env that executes calls): the env lives in a worker process that is
    killed at the budget; in-process only where nothing runs (``resolve`` of argument names)."""
    if not isolated:
        return build_env(kind, involved_classes, initial_config, long_context)
    check_kind(kind, involved_classes)
    return IsolatedEnv(kind, involved_classes, initial_config, long_context)
