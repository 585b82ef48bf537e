"""TARL's turn judge as a reward term: verdicts land on the action that closed each turn, through
the real gateway (an llm-katan echo server plays a scripted judge) and with the embedded model;
a rerun asks nothing (the response cache)."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from progra_core.calls import Call
from progra_core.config import GRPOConfig
from progra_core.envs.bfcl import function_docs
from progra_core.llm import Gateway
from progra_core.llm.types import Endpoint
from progra_core.methods import recipe
from progra_core.prompts.judge import parse_verdict
from progra_core.train.grpo import rubric_for
from progra_core.train.judge import judge_term
from progra_core.train.rollout import Episode, run_episodes
from tests.support import CONFIG, GOLD, Scripted

FS = ["GorillaFileSystem"]


def _episodes():
    def ep(eid, verdict1, verdict2):  # the echo judge repeats the turn record, query included
        return Episode(eid, FS, json.dumps(CONFIG), json.dumps(function_docs(FS)), "",
                       [{"query": f"Go into workspace and list it (verdict: {verdict1})",
                         "steps": [[Call("cd", {"folder": "workspace"})], [Call("ls", {})]]},
                        {"query": f"Print a.txt (verdict: {verdict2})", "steps": [[Call("cat", {"file_name": "a.txt"})]]}])
    return [ep("good", 1, 1), ep("mixed", 1, -1)]


def _play(tok, rubric):
    scripts = iter([Scripted(tok, GOLD), Scripted(tok, GOLD)])
    gens = [next(scripts), next(scripts)]
    return run_episodes(_episodes(), lambda ctxs: [g([c])[0] for g, c in zip(gens, ctxs, strict=False)], tok, "awareness",
                        rubric, docs_style="compact")


def test_parse_verdict():
    assert parse_verdict("verdict: 1") == 1 and parse_verdict("x verdict: 0 then verdict: -1") == -1
    assert parse_verdict("no idea") is None and parse_verdict("verdict:+1") == 1


def test_a_scripted_judge_through_the_real_gateway(tmp_path, katan_echo, embedded_model):
    tok = AutoTokenizer.from_pretrained(embedded_model)
    srv = katan_echo()
    gw = Gateway(tmp_path / "cache", strict=True)
    stats: dict = {}
    judge = judge_term(gw, Endpoint("openai/echo", srv.api_base), stats=stats)
    rubric = rubric_for(recipe("progra_tarl"), GRPOConfig(), {"judge": judge})
    assert rubric.names == ("fmt", "schema", "acc", "pen", "judge")
    good, mixed = _play(tok, rubric)
    assert [a["terms"]["judge"] for a in good.actions] == [0.0, 0.0, 0.5, 0.0, 0.5]  # on each closing action, weight 0.5
    assert [a["terms"]["judge"] for a in mixed.actions] == [0.0, 0.0, 0.5, 0.0, -0.5]
    assert good.returns["judge"] == pytest.approx(1.0) and mixed.returns["judge"] == pytest.approx(0.0)
    assert stats == {"verdict_1": 3, "verdict_-1": 1} and srv.requests() == 4
    _play(tok, rubric)  # the same turns again: every verdict from the cache
    assert srv.requests() == 4
    gw.close()


def test_the_embedded_model_as_judge(tmp_path, embedded_model):
    from tests.conftest import MODELS_ROOT

    tok = AutoTokenizer.from_pretrained(embedded_model)
    gw = Gateway(tmp_path / "cache", models_root=MODELS_ROOT)
    stats: dict = {}
    rubric = rubric_for(recipe("progra_tarl"), GRPOConfig(), {"judge": judge_term(gw, Endpoint("local/smollm2"), stats=stats)})
    rollouts = _play(tok, rubric)
    verdicts = [a["terms"]["judge"] / 0.5 for r in rollouts for a in r.actions if a["turn_end"]]
    assert len(verdicts) == 4 and set(verdicts) <= {-1.0, 0.0, 1.0}
    assert stats.get("unparsed", 0) == 0  # a local judge chooses among the verdicts: it always answers one
    gw.close()
