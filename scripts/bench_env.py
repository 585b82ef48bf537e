"""Micro-benchmark: BFCLEnv vs BFCL's own executor, replaying ground truth (steps/s, medians).

Run: .venv/bin/python scripts/bench_env.py [--repeats 5] [--category base]
A step is one call. Both sides build fresh instances per entry and execute every turn; BFCL's
executor is run only on BFCL's own ground truth (it evaluates strings).
"""

from __future__ import annotations

import argparse
import statistics
import time

from progra_core.calls import parse_calls
from progra_core.datasets.bfcl import load_entries
from progra_core.envs.bfcl import BFCLEnv


def ours(entries, long_context) -> int:
    steps = 0
    for e in entries:
        env = BFCLEnv(e["initial_config"], e["involved_classes"], long_context=long_context)
        for turn in e["ground_truth"]:
            if turn:
                steps += len(env.execute(parse_calls("[" + ", ".join(turn) + "]")))
    return steps


def theirs(entries, long_context, tag) -> int:
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils as mtu

    steps = 0
    for e in entries:
        for turn in e["ground_truth"]:
            obs, _ = mtu.execute_multi_turn_func_call(turn, e["initial_config"], e["involved_classes"], tag, e["id"], long_context=long_context)
            steps += len(obs)
        for k in [k for k in vars(mtu) if k.startswith(tag)]:
            del vars(mtu)[k]
    return steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--category", default="base")
    a = ap.parse_args()
    entries = load_entries(a.category)
    lc = a.category == "long_context"
    rows = {"BFCLEnv (ast, no eval)": [], "BFCL executor (eval)": []}
    n = 0
    for i in range(a.repeats):
        t = time.perf_counter()
        n = ours(entries, lc)
        rows["BFCLEnv (ast, no eval)"].append(n / (time.perf_counter() - t))
        t = time.perf_counter()
        theirs(entries, lc, f"bench{i}")
        rows["BFCL executor (eval)"].append(n / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"{a.category}: {len(entries)} entries, {n} steps per pass, {a.repeats} repeats (median steps/s)")
    for k, v in med.items():
        print(f"  {k:28s} {v:10.0f} steps/s")
    print(f"  ratio ours/theirs            {med['BFCLEnv (ast, no eval)'] / med['BFCL executor (eval)']:.2f}")


if __name__ == "__main__":
    main()
