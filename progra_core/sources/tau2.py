"""τ²-bench train-split tasks (airline, retail) as ``trajectories`` rows: each task's reference
actions are executed in a fresh :class:`~progra_core.envs.tau2.Tau2Env`, one call per step, and
the observations are the env's own. The user turn is the customer's request as the task's user
scenario states it (reason for calling plus what they know), so a row reads like one user turn
answered by the reference actions; the env column is ``tau2`` and ``involved_classes`` names the
domain, which is all :func:`~progra_core.envs.base.make_env` needs to rebuild the episode for
PAG-RL, where SUCCESS is τ²'s database check against the reference actions replayed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from progra_core.calls import calls_to_records
from progra_core.envs.factory import make_env
from progra_core.envs.tau2 import TRAIN_DOMAINS, load_tasks, reference_calls
from progra_core.schemas import reject

__all__ = ["task_query", "task_to_trajectory", "iter_trajectories"]


def task_query(task) -> str:
    """The customer's opening request, from the task's user scenario."""
    ins = task.user_scenario.instructions
    if isinstance(ins, str):
        return ins.strip()
    parts = [getattr(ins, "reason_for_call", None), getattr(ins, "known_info", None)]
    return "\n".join(p.strip() for p in parts if p and p.strip())


def task_to_trajectory(domain: str, task) -> dict[str, Any]:
    """Execute the task's reference actions and build the row (a user-side action is an error:
    only agent-side tools belong in an agent's trajectory)."""
    env = make_env("tau2", [domain], task.initial_state)
    actions = []
    for requestor, call in reference_calls(task):
        if requestor != "assistant":
            raise ValueError(f"reference action {call.name} is the user's; only agent actions can be trained on")
        resolved = env.resolve(call)
        actions.append({"calls": calls_to_records([resolved]), "observations": env.execute([resolved])})
    state = task.initial_state.model_dump(mode="json") if task.initial_state is not None else None
    return {
        "trajectory_id": f"tau2:{domain}:{task.id}",
        "source": "tau2",
        "source_id": task.id,
        "category": domain,
        "split": "train",
        "env": "tau2",
        "involved_classes": [domain],
        "initial_config": json.dumps(state),
        "tools": json.dumps(env.tools()),
        "scenario": env.scenario(),
        "long_context": False,
        "turns": [{"query": task_query(task), "actions": actions, "reply": None, "tools_added": []}],
        "n_turns": 1,
        "n_calls": len(actions),
        "created_at": datetime.now(UTC),
    }


def iter_trajectories(domains: list[str], limit: int | None = None) -> Iterator[tuple[dict | None, dict | None]]:
    """``(row, None)`` per train-split task of each domain, or ``(None, reject)``."""
    for d in domains:
        if d not in TRAIN_DOMAINS:  # config validation stops this first; never train on the test domain
            raise ValueError(f"tau2 {d} is not a training domain ({list(TRAIN_DOMAINS)})")
        tasks = load_tasks(d, "train")
        for task in tasks if limit is None else tasks[:limit]:
            try:
                yield task_to_trajectory(d, task), None
            except Exception as e:  # a broken task is quarantined, not fatal
                yield None, reject("ingest", f"tau2:{d}:{task.id}", "tau2_conversion_failed", f"{type(e).__name__}: {e}")
