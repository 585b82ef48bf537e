"""The whole pipeline on a user's own environment (tests/integration/test_plugin_*.py): ingest of
chat records that name it, APIGen-MT-style synthesis against it (seed configs from the config),
segment -> awareness -> verify -> augment -> SFT, a PAG-RL step whose episodes run in it, and a
held-out evaluation in it (per-turn success and the next-call metric), with nothing but the config
naming the env. The policy and every data role are the tiny random llama (local, in-process)."""

from __future__ import annotations

import json
from pathlib import Path

from progra_core.config import load_config
from tests.plugins import data


def _count(path: Path) -> int:
    return len([line for line in path.read_text().splitlines() if line.strip()])


SMALL = ["sft.max_steps=1", "sft.batch_size=2", "sft.max_length=2048", "grpo.batch_size=1", "grpo.num_generations=2",
         "grpo.max_actions=2", "grpo.max_action_tokens=80", "awareness.max_tokens=16", "grpo.max_turns=2",
         "grpo.episodes=2", "grpo.max_steps=1", "grpo.select=shortest"]


def run_and_check(name: str, spec, tmp_path: Path, tiny_llama: Path) -> None:
    """The whole pipeline on env ``name`` (``spec``: its config entry), then what each stage must show."""
    from flows.pipeline import full_pipeline
    from storage import Catalog

    train, held_out = data.write(tmp_path, name)
    root = tmp_path / "root"
    local = f"local/{tiny_llama}"
    cfg = load_config("embedded", overrides=[
        f"storage.root={root}", "envs=" + json.dumps({name: spec}),
        "ingest.bfcl_categories=[]", f"ingest.jsonl=[{train}]",
        "synthesize.enabled=true", f"synthesize.env={name}", "synthesize.seeds=" + json.dumps(data.SEEDS),
        "synthesize.attempts=1", "synthesize.turns=1", "synthesize.candidates=1", "synthesize.reviewers=1",
        "synthesize.exemplars=1", "synthesize.max_iterations=1", "synthesize.config_max_tokens=64",
        "synthesize.query_max_tokens=16", "synthesize.action_max_tokens=32", "synthesize.concurrency=2",
        *(f"models.{r}={local}" for r in ("generator", "action", "reviewer", "augmenter")), f"models.policy={local}",
        "awareness.generator=template", "sft_data.cold_start_min=4",
        "evaluate.categories=[]", "evaluate.next_call_limit=0", f"evaluate.held_out=[{held_out}]", "evaluate.held_out_limit=2", "evaluate.trials=1", "evaluate.max_steps_per_turn=2",
        "evaluate.max_tokens=24", "evaluate.next_call_max_tokens=24", "evaluate.prompt=policy", *SMALL])
    ids = full_pipeline(cfg)
    cat = Catalog(str(root))

    # synthesis ran against the plugin: every attempt built its env from a generated config, and
    # each one that reached an action executed it there (an outcome per turn), or stopped with a reason
    attempts = cat.sql("select stop_reason, initial_config, turns from synthesis_attempts").to_pylist()
    assert len(attempts) == 1
    for a in attempts:
        assert a["stop_reason"] in ("completed", "config_invalid", "no_consensus", "execution_error", "review_rejected",
                                    "query_empty", "query_repeated")
        for t in a["turns"]:
            assert t["outcome"] != "ok" or t["calls"]  # an accepted turn executed calls in the env
    synthesized = cat.sql("select env, count(*) n from synthesized group by env").to_pylist()
    assert all(r["env"] == name for r in synthesized)

    # D holds the ingested records in the plugin env, with its tool docs
    trajs = cat.sql("select env, tools, split from trajectories_latest where source = 'jsonl'").to_pylist()
    assert len(trajs) == _count(train) == 12 and {t["env"] for t in trajs} == {name}
    assert {d["name"] for d in json.loads(trajs[0]["tools"])} == {"add_note", "delete_note", "list_notes", "read_note"}
    # awareness rows (template generator) went through verification into SFT, beside turn ends
    kinds = {r["kind"]: r["n"] for r in cat.sql("select kind, count(*) n from sft_examples group by kind").to_pylist()}
    assert kinds.get("turn_end", 0) > 0 and sum(kinds.values()) >= 4

    # PAG-RL episodes were the plugin's trajectories, played in fresh episodes of its env (each
    # rollout's turns judged against the ground truth replayed in a twin env)
    env_ids = {r["trajectory_id"] for r in cat.sql("select trajectory_id from trajectories").to_pylist()}
    rollouts = cat.sql("select prompt_id, n_turns, turns_passed, actions from rollouts").to_pylist()
    assert rollouts and all(r["prompt_id"].split("#")[0] in env_ids for r in rollouts), [r["prompt_id"] for r in rollouts]
    assert all(r["actions"] and r["n_turns"] >= 1 for r in rollouts)
    assert ids["grpo"] and ids["sft"]

    # held-out evaluation in the env, for base and trained: per-turn success and next-call rows
    rows = cat.sql("select model_ref, benchmark, category, passed, turn_passed, n_turns from eval_results").to_pylist()
    played = [r for r in rows if r["benchmark"] == name]
    assert sorted({r["model_ref"] for r in played}) == sorted({"base", ids["grpo"]})
    turns = [len([m for m in json.loads(line)["messages"] if m["role"] == "user"]) for line in held_out.read_text().splitlines()][:2]
    assert len(played) == 2 * len(turns) and all(r["category"] == name for r in played)
    assert sorted(r["n_turns"] for r in played) == sorted(turns * 2)
    assert all(len(r["turn_passed"]) == r["n_turns"] for r in played)
    nxt = [r for r in rows if r["benchmark"] == "next_call"]
    assert {r["category"] for r in nxt} == {f"{name}:call", f"{name}:end"}
    assert len(nxt) == 2 * (sum(turns) + sum(turns))  # each held-out turn: one call step and its end, for each model
    rejects = cat.sql("select stage, reason from rejects where stage in ('ingest', 'evaluate')").to_pylist()
    assert rejects == []
    from progra_core.evaluation.report import plugin_columns

    summary = cat.sql("select * from eval_summary").to_pylist()
    assert [h for h, _, _ in plugin_columns(summary)] == [name, f"{name} turn", f"{name} next exact", f"{name} ends turn"]
