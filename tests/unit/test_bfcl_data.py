import json
from collections import Counter

import pytest

from progra_core.sources.bfcl import (
    ADDED_FUNCTIONS_PROMPT,
    CATEGORIES,
    entry_to_trajectory,
    iter_trajectories,
    load_entries,
    split_of,
)


def test_entries_carry_ground_truth_and_fields():
    for cat in CATEGORIES:
        es = load_entries(cat)
        assert len(es) == 200
        for e in es:
            assert len(e["ground_truth"]) == len(e["question"])
            assert isinstance(e["missed_function"], dict) and isinstance(e["excluded_function"], list)
    mf = load_entries("miss_func", ids=["multi_turn_miss_func_0"])[0]
    assert mf["missed_function"] == {"3": ["sort"]}


def test_split_is_deterministic_by_scenario_and_documented_share():
    ids = [e["id"] for e in load_entries("base")]
    splits = [split_of(i) for i in ids]
    assert splits == [split_of(i) for i in ids]
    for n in range(200):  # every variant of a scenario lands on the same side
        assert len({split_of(f"multi_turn_{c}_{n}") for c in CATEGORIES}) == 1
    share = Counter(splits)["held_out"] / 200
    assert 0.4 < share < 0.6
    assert all(split_of(i, held_out_percent=0) == "train" for i in ids)
    assert all(split_of(i, held_out_percent=100) == "held_out" for i in ids)
    with pytest.raises(ValueError):
        split_of("nonsense")


def test_trajectory_row_replays_ground_truth():
    e = load_entries("base", ids=["multi_turn_base_0"])[0]
    row = entry_to_trajectory(e)
    assert row["trajectory_id"] == "bfcl:multi_turn_base_0" and row["env"] == "bfcl"
    assert row["n_turns"] == 4 and row["n_calls"] == sum(len(t) for t in e["ground_truth"])
    t0 = row["turns"][0]
    assert t0["query"].startswith("Move 'final_report.pdf'")
    assert [a["calls"][0]["name"] for a in t0["actions"]] == ["cd", "mkdir", "mv"]
    assert all(len(a["observations"]) == 1 for a in t0["actions"])
    sort_call = row["turns"][2]["actions"][0]["calls"][0]
    assert json.loads(sort_call["arguments"]) == {"file_name": "final_report.pdf"}  # positional resolved
    assert json.loads(row["initial_config"]) == e["initial_config"]
    per_turn = entry_to_trajectory(e, step_mode="per_turn")
    assert [len(t["actions"]) for t in per_turn["turns"]] == [1, 1, 1, 1]
    assert [len(t["actions"][0]["calls"]) for t in per_turn["turns"]] == [len(t) for t in e["ground_truth"]]


def test_miss_func_and_miss_param_turns():
    mf = entry_to_trajectory(load_entries("miss_func", ids=["multi_turn_miss_func_0"])[0])
    assert mf["turns"][3]["query"] == ADDED_FUNCTIONS_PROMPT and mf["turns"][3]["tools_added"] == ["sort"]
    mp_entries = load_entries("miss_param")
    e = next(e for e in mp_entries if any(len(t) == 0 for t in e["ground_truth"]))
    row = entry_to_trajectory(e)
    empty = [i for i, t in enumerate(e["ground_truth"]) if not t]
    assert all(row["turns"][i]["actions"] == [] for i in empty)


def test_broken_entry_becomes_a_reject(monkeypatch):
    from progra_core.sources import bfcl

    real = bfcl.load_entries

    def broken(cat, ids=None):
        es = real(cat, ids)
        es[0]["ground_truth"] = es[0]["ground_truth"][:-1]
        es[1]["initial_config"] = {"GorillaFileSystem": {"root": {"x": {"type": "directory"}}}}
        return es

    monkeypatch.setattr(bfcl, "load_entries", broken)
    out = list(iter_trajectories(["base"], split=None, limit=5))
    rejects = [r for _, r in out if r]
    assert [r["input_id"] for r in rejects] == ["bfcl:multi_turn_base_0", "bfcl:multi_turn_base_1"]
    assert all(r["reason"] == "bfcl_conversion_failed" for r in rejects)
    assert "ground truth has" in rejects[0]["detail"]
    assert sum(1 for row, _ in out if row) == 3
