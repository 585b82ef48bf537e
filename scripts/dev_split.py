"""Choose SFT settings on a dev fold of the *train* split, never on held-out data.

A fifth of the train-split BFCL trajectories (by a hash of the id: ``--fold``) is taken out of D
before ``sft_data`` runs, so no variant trains on them; each variant's SFT data is built by the
stage's own function from the run's cached ``augmented`` and ``segments`` datasets with the
variant's config overrides, trained by ``progra stage sft`` (cached like any stage), and scored on
next-call cases of the fold built exactly as the held-out evaluation builds them (the training
prompt and layout, the shortest ``--limit`` call steps and a quarter as many turn ends, greedy).

usage: python scripts/dev_split.py --root ./.progra NAME=OVERRIDE[,OVERRIDE...] ...
       e.g. base=  cs2=sft_data.cold_start_ratio=2.0  steps96=sft.max_steps=96
       python scripts/dev_split.py --root ./.progra --set evaluate.forced_answer_tokens=96 --score NAME=MODEL_ID
       (run after ``make run``: the root's newest augmented/segments datasets are used)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def in_fold(trajectory_id: str, fold: int) -> bool:
    """The dev fold: 1 in ``fold`` train trajectories, by a hash of the id (stable across runs)."""
    return int(hashlib.sha256(trajectory_id.encode()).hexdigest(), 16) % fold == 0


def build(store, cfg, aug_id: str, seg_id: str, fold: int, overrides: list[str]) -> str:
    """The variant's sft_examples without the fold's trajectories (cached under a fingerprint)."""
    from progra_core.data.sft_data import sft_data

    dataset_id = "dev" + hashlib.sha256(json.dumps([aug_id, seg_id, fold, sorted(overrides)]).encode()).hexdigest()[:14]
    if store.exists("sft_examples", dataset_id):
        return dataset_id
    segs = {r["segment_id"]: r for r in store.read(store.find(seg_id)).to_pylist()}
    keep = {k: s for k, s in segs.items() if s.get("split") == "held_out" or not in_fold(s["trajectory_id"], fold)}
    aug = [a for a in store.read(store.find(aug_id)).to_pylist() if a["segment_id"] in keep]
    table, rejects, stats = sft_data(aug, keep, cfg.sft_data, cfg.tool_docs)
    store.write("sft_examples", table, dataset_id=dataset_id, config={"dev_fold": fold, "overrides": overrides},
                parents=[aug_id, seg_id], rejects=rejects, stats=stats)
    print(f"  sft_examples {dataset_id}: {stats}", flush=True)
    return dataset_id


def train(root: str, data_id: str, overrides: list[str]) -> str:
    """``progra stage sft`` on the variant's data; returns the registered model's id."""
    from storage import DatasetStore

    sets = [a for o in overrides for a in ("--set", o)]
    subprocess.run([sys.executable, "-m", "flows.cli", "stage", "sft", "--input", data_id, "--root", root, *sets],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    models = [r for r in DatasetStore(root).list("models") if data_id in r.parents]
    return models[-1].dataset_id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="./.progra")
    ap.add_argument("--fold", type=int, default=5, help="1 in FOLD train trajectories form the dev fold")
    ap.add_argument("--limit", type=int, default=32, help="dev call steps (and a quarter as many turn ends)")
    ap.add_argument("--augmented", help="the augmented dataset (default: the root's newest)")
    ap.add_argument("--segments", help="the segments dataset (default: the root's newest)")
    ap.add_argument("--score", action="append", default=[], metavar="NAME=MODEL_ID",
                    help="also score a model trained already (its data must have left the fold out)")
    ap.add_argument("--set", action="append", default=[], dest="sets", metavar="FIELD=VALUE",
                    help="override an evaluate.* field for scoring (repeatable): evaluate.forced_answer_tokens=96")
    ap.add_argument("variants", nargs="*", help="NAME=OVERRIDE[,OVERRIDE...] (empty: the profile as it is; base: the base model)")
    args = ap.parse_args()

    from progra_core.config.loading import load_config
    from progra_core.evaluation.bfcl import Subject
    from progra_core.evaluation.next_call import run_next_call, trajectory_cases
    from storage import DatasetStore
    from tasks.evaluate import resolve_subjects
    from tasks.limits import gateway_for

    root = str(Path(args.root).resolve())
    store = DatasetStore(root)
    aug_id = args.augmented or store.list("augmented")[-1].dataset_id
    seg_id = args.segments or store.list("segments")[-1].dataset_id
    if bad := [o for o in args.sets if not o.startswith("evaluate.")]:
        ap.error(f"--set takes evaluate.* fields only (training settings are variants): {bad}")
    base_cfg = load_config("embedded", overrides=[f"storage.root={root}", *args.sets])
    trajs = {r["trajectory_id"]: r for ref in store.list("trajectories") for r in store.read(ref).to_pylist()
             if r["source"] == "bfcl" and r["split"] == "train" and in_fold(r["trajectory_id"], args.fold)}
    cases = trajectory_cases([trajs[k] for k in sorted(trajs)], True, base_cfg.tool_docs, args.limit)
    print(f"dev fold: {len(trajs)} train trajectories, {sum(c['kind'] == 'call' for c in cases)} call steps + "
          f"{sum(c['kind'] == 'end' for c in cases)} turn ends (augmented {aug_id}, segments {seg_id})", flush=True)

    def score(subject: Subject, local: dict) -> dict:
        gateway = gateway_for(base_cfg, root)
        gateway.local_models.update(local)
        try:
            rows = run_next_call(cases, gateway, subject, base_cfg.evaluate).to_pylist()
        finally:
            gateway.close(unload_models=True)
        calls = [r for r in rows if r["category"] == "call"]
        why = Counter(r["error_type"] or "passed" for r in rows)
        print(f"  outcomes: {dict(why)}; decode errors: {Counter((r['steps'][0]['decode_error'] or '')[:60] for r in calls if not r['valid_call'])}",
              flush=True)
        return {"valid": sum(bool(r["valid_call"]) for r in calls), "function": sum(bool(r["right_function"]) for r in calls),
                "exact": sum(r["passed"] for r in calls), "calls": len(calls),
                "ends": sum(r["passed"] for r in rows if r["category"] == "end"),
                "turn_ends": sum(r["category"] == "end" for r in rows)}

    def score_model(name: str) -> dict:
        """``base`` or a model id, as ``progra evaluate`` resolves it (its prompt: the profile's)."""
        ((subject, _),), local = resolve_subjects(base_cfg, store, names=[name])
        return {"model": name, **score(subject, local)}

    results = {}
    for spec in args.score:
        name, _, model_id = spec.partition("=")
        results[name] = score_model(model_id)
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    for spec in args.variants:
        name, _, over = spec.partition("=")
        overrides = [o for o in over.split(",") if o]
        print(f"{name}: {overrides or 'the profile as it is'}", flush=True)
        if name == "base":
            results[name] = score_model("base")
        else:
            cfg = load_config("embedded", overrides=[f"storage.root={root}", *overrides])
            results[name] = score_model(train(root, build(store, cfg, aug_id, seg_id, args.fold, overrides), overrides))
        print(f"  {json.dumps(results[name])}", flush=True)
    print("\n| variant | valid | function | exact | ends turn |\n|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['valid']}/{r['calls']} | {r['function']}/{r['calls']} | {r['exact']}/{r['calls']} | "
              f"{r['ends']}/{r['turn_ends']} |")


if __name__ == "__main__":
    main()
