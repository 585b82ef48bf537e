"""Building an env in this process: the kinds a ``trajectories`` row may name, their checks, and
the concrete classes. :mod:`progra_core.envs.factory` decides where an env lives; the worker
process of :mod:`progra_core.envs.isolated` builds its envs here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from progra_core.envs.base import Env, EnvError
from progra_core.envs.bfcl import BFCLEnv
from progra_core.envs.tau2 import Tau2Env

__all__ = ["ENV_KINDS", "build_env", "check_kind"]

#: trajectories.env values and what they mean for ``involved_classes`` / ``initial_config``.
ENV_KINDS = {
    "bfcl": "involved_classes = BFCL API classes; initial_config = their scenario config (JSON)",
    "tau2": "involved_classes = [tau2 domain]; initial_config = the task's initial_state (JSON, may be null)",
}


def check_kind(kind: str | None, involved_classes: Sequence[str]) -> None:
    """An :class:`EnvError` for a kind no env has, or a τ² row that does not name one domain."""
    if kind not in (None, "", "bfcl", "tau2"):
        raise EnvError(f"unknown env kind {kind!r}; known: {sorted(ENV_KINDS)}")
    if kind == "tau2" and len(involved_classes) != 1:
        raise EnvError(f"a tau2 episode names exactly one domain in involved_classes, got {list(involved_classes)}")


def build_env(kind: str | None, involved_classes: Sequence[str], initial_config: Any, long_context: bool = False) -> Env:
    """The concrete env, in this process."""
    check_kind(kind, involved_classes)
    if kind in (None, "", "bfcl"):
        return BFCLEnv(initial_config, involved_classes, long_context=long_context)
    return Tau2Env(involved_classes[0], initial_state=initial_config)
