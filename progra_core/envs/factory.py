"""The one factory that builds an episode's environment from a ``trajectories`` row (``env``,
``involved_classes``, ``initial_config``); it is the only module that knows every concrete env."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from progra_core.envs.base import Env, EnvError
from progra_core.envs.bfcl import BFCLEnv
from progra_core.envs.tau2 import Tau2Env

__all__ = ["ENV_KINDS", "make_env"]

#: trajectories.env values and what they mean for ``involved_classes`` / ``initial_config``.
ENV_KINDS = {
    "bfcl": "involved_classes = BFCL API classes; initial_config = their scenario config (JSON)",
    "tau2": "involved_classes = [tau2 domain]; initial_config = the task's initial_state (JSON, may be null)",
}


def make_env(kind: str | None, involved_classes: Sequence[str], initial_config: Any, long_context: bool = False,
             isolated: bool = True) -> Env:
    """A fresh env for one episode of a ``trajectories`` row (``env`` column: bfcl or tau2).
    ``isolated`` (every env that executes calls): the env lives in a worker process that is
    killed at the budget (:mod:`progra_core.envs.isolated`); in-process only where nothing runs
    (``resolve`` of argument names) or inside that worker."""
    if kind not in (None, "", "bfcl", "tau2"):
        raise EnvError(f"unknown env kind {kind!r}; known: {sorted(ENV_KINDS)}")
    if kind == "tau2" and len(involved_classes) != 1:
        raise EnvError(f"a tau2 episode names exactly one domain in involved_classes, got {list(involved_classes)}")
    if isolated:
        from progra_core.envs.isolated import IsolatedEnv

        return IsolatedEnv(kind, involved_classes, initial_config, long_context)
    if kind in (None, "", "bfcl"):
        return BFCLEnv(initial_config, involved_classes, long_context=long_context)
    return Tau2Env(involved_classes[0], initial_state=initial_config)
