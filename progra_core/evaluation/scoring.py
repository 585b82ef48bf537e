"""BFCL multi-turn scoring, compatible with the official checker and without its ``eval``.

bfcl-eval's ``multi_turn_checker`` replays the model's decoded calls with ``eval`` in module
globals. We replay the same calls in two fresh :class:`~progra_core.envs.bfcl.BFCLEnv` instances
(model and ground truth, both kept across turns) and apply the same rules per turn:

* a turn whose ground truth has calls fails if the model issued no call in it
  (``empty_turn_model_response``);
* every public attribute of every ground-truth instance must equal the model's
  (``instance_state_mismatch``);
* every ground-truth observation of the turn must appear among the model's observations of
  *all turns so far*, as a multiset (``execution_response_mismatch``);
* a turn without ground truth (miss_param's "ask the user" turn, miss_func's turn before the
  functions arrive) is not checked: its ``turn_passed`` is null, so per-turn accuracy counts
  only turns BFCL checks.

The entry passes iff every turn passes and the model played every turn (an inference error or
the step limit ends an entry early: ``inference_error`` / ``force_terminated``). Unlike the
official checker we do not stop at the first failure: ``turn_passed`` judges every turn, which
gives per-turn accuracy and the first failing turn (gorilla issue #920). A test checks that the
entry verdict agrees with bfcl-eval's checker on the ground truth and on corrupted predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from progra_core.calls import Call, parse_calls
from progra_core.envs.base import missing_observations
from progra_core.envs.factory import make_env

__all__ = ["EntryScore", "check_entry", "ground_truth_calls", "missing_observations", "ERROR_TYPES"]

#: bfcl-eval's error types, so a user can compare our rows with its score files.
ERROR_TYPES = (
    "multi_turn:empty_turn_model_response",
    "multi_turn:instance_state_mismatch",
    "multi_turn:execution_response_mismatch",
    "multi_turn:force_terminated",
    "multi_turn:inference_error",
)


@dataclass
class EntryScore:
    passed: bool
    turn_passed: list[bool | None]  # None: a turn without ground truth, which BFCL does not check
    first_failed_turn: int | None = None
    error_type: str | None = None
    error: str | None = None
    turn_errors: list[str | None] = field(default_factory=list)


def ground_truth_calls(entry: dict) -> list[list[Call]]:
    """The entry's ground truth as parsed calls, one list per turn."""
    return [parse_calls("[" + ", ".join(t) + "]") if t else [] for t in entry["ground_truth"]]


def check_entry(entry: dict, model_turns: Sequence[Sequence[Sequence[Call]]], *, ended: str | None = None,
                ended_detail: str | None = None) -> EntryScore:
    """Score one entry. ``model_turns[t]`` holds the call lists of turn ``t``'s steps (steps with
    no call are ignored, as bfcl-eval drops undecodable or empty steps). ``ended`` is set when the
    run stopped early (``force_terminated`` or ``inference_error``): the turn it stopped in (the
    last of ``model_turns``) and the turns never played fail."""
    long_context = "long_context" in entry.get("category", "") or "long_context" in entry["id"]
    kind = entry.get("env") or "bfcl"  # a plugin's held-out trajectory plays by the same rules in its own env
    model = make_env(kind, entry["involved_classes"], entry["initial_config"], long_context)
    truth = make_env(kind, entry["involved_classes"], entry["initial_config"], long_context)
    gt = ground_truth_calls(entry)
    all_obs: list[str] = []
    passed: list[bool | None] = []
    errors: list[str | None] = []
    for t, gt_turn in enumerate(gt):
        played = t < len(model_turns)
        steps = [list(s) for s in (model_turns[t] if played else []) if s]
        for step in steps:
            all_obs.extend(model.execute(step))
        gt_obs = truth.execute(gt_turn)
        err = None
        if not played:
            err = f"multi_turn:{ended or 'force_terminated'}"
        elif gt_turn and not steps:
            err = "multi_turn:empty_turn_model_response"
        elif gt_turn and not truth.same_state(model):  # a plugin env without state: always the same
            err = "multi_turn:instance_state_mismatch"
        elif gt_turn and (miss := missing_observations(gt_obs, all_obs)):
            err = f"multi_turn:execution_response_mismatch ({len(miss)} missing)"
        passed.append(None if (err is None and not gt_turn) else err is None)
        errors.append(err)
    if ended and model_turns:  # the turn it stopped in failed too, whatever its state
        t = min(len(model_turns), len(gt)) - 1
        passed[t], errors[t] = False, f"multi_turn:{ended}"
    first = next((t for t, ok in enumerate(passed) if ok is False), None)
    etype = errors[first].split(" ")[0] if first is not None else None
    if ended:  # bfcl-eval fails an early-ended entry before checking any turn
        etype = f"multi_turn:{ended}"
    detail = ended_detail if ended else (f"turn {first}: {errors[first]}" if first is not None else None)
    return EntryScore(passed=first is None and not ended, turn_passed=passed, first_failed_turn=first,
                      error_type=etype, error=detail, turn_errors=errors)
