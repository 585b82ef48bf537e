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


def make_env(kind: str | None, involved_classes: Sequence[str], initial_config: Any, long_context: bool = False) -> Env:
    """A fresh env for one episode of a ``trajectories`` row (``env`` column: bfcl or tau2)."""
    if kind in (None, "", "bfcl"):
        return BFCLEnv(initial_config, involved_classes, long_context=long_context)
    if kind == "tau2":
        if len(involved_classes) != 1:
            raise EnvError(f"a tau2 episode names exactly one domain in involved_classes, got {list(involved_classes)}")
        return Tau2Env(involved_classes[0], initial_state=initial_config)
    raise EnvError(f"unknown env kind {kind!r}; known: {sorted(ENV_KINDS)}")
