"""Our executor vs BFCL's on every ground-truth entry of the four multi-turn categories.

BFCL's executor (``execute_multi_turn_func_call``) runs strings through ``eval``: we run it here on
BFCL's own ground truth only, never on model output.
"""

import pytest

from progra_core.calls import parse_calls
from progra_core.envs.bfcl import BFCLEnv
from progra_core.sources.bfcl import CATEGORIES, load_entries


def _theirs():
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils

    return multi_turn_utils


@pytest.mark.slow
@pytest.mark.parametrize("category", CATEGORIES)
def test_ground_truth_observations_and_state_match_bfcl(category):
    mtu = _theirs()
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import state_checker

    entries = load_entries(category)
    assert len(entries) == 200
    turns = mismatched = state_mismatch = 0
    first_diff = None
    for e in entries:
        lc = category == "long_context"
        ours = BFCLEnv(e["initial_config"], e["involved_classes"], long_context=lc)
        tag = f"progra_conformance_{category}"
        for gt_turn in e["ground_truth"]:
            our_obs = ours.execute(parse_calls("[" + ", ".join(gt_turn) + "]")) if gt_turn else []
            their_obs, their_instances = mtu.execute_multi_turn_func_call(
                gt_turn, e["initial_config"], e["involved_classes"], tag, e["id"], long_context=lc)
            turns += 1
            if our_obs != their_obs:
                mismatched += 1
                first_diff = first_diff or (e["id"], our_obs, their_obs)
            if not state_checker(ours.instances, their_instances)["valid"]:
                state_mismatch += 1
        for k in [k for k in vars(mtu) if k.startswith(tag)]:  # their instances live in module globals
            del vars(mtu)[k]
    print(f"{category}: {len(entries)} entries, {turns} turns, {mismatched} observation mismatches, {state_mismatch} state mismatches")
    assert turns > 600
    assert mismatched == 0, first_diff
    assert state_mismatch == 0
