"""τ²-bench through the evaluate flow under a real Prefect server: the agent under test and the
user simulator are real endpoints (llm-katan on loopback, through LiteLLM); every domain's
conversation is played, scored by τ²'s evaluator, stored with benchmark = tau2, shown in the
Airline / Retail / Telecom columns, trials averaged; a rerun asks neither endpoint again."""

from __future__ import annotations

import json

import pytest

from progra_core.config import load_config

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_tau2_evaluation_with_endpoint_agent_and_user_simulator(tmp_path, katan_echo):
    from flows.evaluate import evaluate
    from storage import Catalog

    agent, user = katan_echo(), katan_echo()
    root = tmp_path / "tau2"
    cfg = load_config("tau2", overrides=[
        f"storage.root={root}", "evaluate.categories=[]", "evaluate.trials=2", "evaluate.tau2_limit=1",
        "evaluate.tau2_max_steps=6", f"evaluate.api_base={agent.api_base}", "models.user_simulator=openai/echo",
        "models.api_base=" + json.dumps({"user_simulator": user.api_base})])
    refs = evaluate(["openai/echo"], None, cfg)
    [ref] = refs.values()
    # greeting (step 1), then user, agent, user, agent, user: 6 steps, 3 user and 2 agent requests per
    # task and trial (each trial is its own sample: nothing is shared through the cache)
    assert user.requests() == 18 and agent.requests() == 12

    rows = Catalog(str(root)).sql("select benchmark, category, entry_id, passed, reward, error_type, n_turns, transcript "
                                  "from eval_results").to_pylist()
    assert sorted(r["category"] for r in rows) == ["airline", "airline", "retail", "retail", "telecom", "telecom"]
    for r in rows:
        # the echo agent never finishes: tau2's own rule scores an unfinished conversation 0
        assert r["benchmark"] == "tau2" and r["passed"] is False and r["reward"] == 0.0 and r["error_type"] == "tau2:max_steps"
        msgs = json.loads(r["transcript"])
        assert [m["role"] for m in msgs] == ["assistant", "user", "assistant", "user", "assistant", "user"]
        assert msgs[0]["content"] == "Hi! How can I help you today?" and r["n_turns"] == 3
        assert msgs[1]["content"].startswith("[echo]")  # the user simulator's text went to the agent
    summary = Catalog(str(root)).sql("select category, runs, entries, trials, accuracy from eval_summary order by category").to_pylist()
    assert summary == [{"category": d, "runs": 2, "entries": 1, "trials": 2, "accuracy": 0.0} for d in ("airline", "retail", "telecom")]

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def table_artifact():
        async with get_client() as c:
            return await c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["eval-table"])))

    import asyncio

    md = max(asyncio.run(table_artifact()), key=lambda a: a.created).data  # the newest: other tests publish it too
    assert "| Model | Method | Overall | Airline | Retail | Telecom |" in md
    assert "| openai/echo | endpoint | – | 0.00 | 0.00 | 0.00 |" in md
    assert "user simulator `openai/echo`" in md and "NOT comparable" not in md

    again = evaluate(["openai/echo"], None, cfg)
    assert {k: v.dataset_id for k, v in again.items()} == {k: v.dataset_id for k, v in refs.items()}
    cfg.evaluate.tau2_max_steps = 5  # a new evaluation; every answer it needs is in the LLM cache
    evaluate(["openai/echo"], None, cfg)
    assert user.requests() == 18 and agent.requests() == 12
