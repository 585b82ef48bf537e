"""The environment protocol every benchmark's executor satisfies, and the one factory that builds
an episode's environment from a ``trajectories`` row.

Segmentation, rollouts, rewards and evaluation talk to an :class:`Env`, never to a benchmark:
they hand it parsed :class:`~progra_core.calls.Call` objects (or call text, which it parses with
``ast``), read one observation per call, and compare its state with a twin that replayed the
ground truth. Every constructed env is its own episode: no state is shared between instances.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from progra_core.calls import Call, CallParseError, parse_calls

__all__ = ["Env", "ENV_KINDS", "make_env", "parse_step"]

#: trajectories.env values and what they mean for ``involved_classes`` / ``initial_config``.
ENV_KINDS = {
    "bfcl": "involved_classes = BFCL API classes; initial_config = their scenario config (JSON)",
    "tau2": "involved_classes = [tau2 domain]; initial_config = the task's initial_state (JSON, may be null)",
}


@runtime_checkable
class Env(Protocol):
    """One episode of an executable benchmark environment."""

    name: str
    history: list[tuple[Call, str]]

    def tools(self) -> list[dict]:
        """Function docs the agent may call (JSON-schema dicts with name/description/parameters)."""

    def scenario(self) -> str:
        """What the agent is told about the environment (BFCL: class descriptions; τ²: the policy)."""

    def resolve(self, call: Call) -> Call:
        """The call with positional arguments bound to parameter names (unchanged if it cannot bind)."""

    def execute_one(self, call: Call) -> str:
        """Run one call; a bad call becomes an error observation, never an exception."""

    def execute(self, calls: Sequence[Call] | str) -> list[str]:
        """Run calls in order (text is parsed with ``ast`` first); one observation per call."""

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state, what the benchmark's own state check compares."""

    def same_state(self, other: Any) -> bool:
        """The benchmark's state check against another episode of the same task."""

    def success(self, target: Any, expected: Sequence[str], observed: Sequence[str]) -> bool:
        """SUCCESS of a turn (Eq. 14): this env against ``target`` (the ground truth replayed), given
        the ground truth's observations and the policy's."""


def parse_step(calls: Sequence[Call] | str) -> tuple[list[Call], str | None]:
    """What every env's ``execute`` takes: parsed calls, or text parsed here with ``ast``. A parse
    error comes back as the step's single observation instead."""
    if not isinstance(calls, str):
        return list(calls), None
    try:
        return parse_calls(calls), None
    except CallParseError as e:
        return [], f"Error during parsing: {e}"


def make_env(kind: str | None, involved_classes: Sequence[str], initial_config: Any, long_context: bool = False) -> Env:
    """A fresh env for one episode of a ``trajectories`` row (``env`` column: bfcl or tau2)."""
    from progra_core.envs.bfcl import BFCLEnv, EnvError

    if kind in (None, "", "bfcl"):
        return BFCLEnv(initial_config, involved_classes, long_context=long_context)
    if kind == "tau2":
        from progra_core.envs.tau2 import Tau2Env

        if len(involved_classes) != 1:
            raise EnvError(f"a tau2 episode names exactly one domain in involved_classes, got {list(involved_classes)}")
        return Tau2Env(involved_classes[0], initial_state=initial_config)
    raise EnvError(f"unknown env kind {kind!r}; known: {sorted(ENV_KINDS)}")
