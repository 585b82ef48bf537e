"""Synthesis end to end over real HTTP: the embedded model behind llm-katan plays generator, action
voters and reviewers; then the data flow with synthesis switched on (echo server) to check the
mix into D, the lineage and the SQL views."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from progra_core.config import load_config
from progra_core.data.synthesize import STOP_REASONS
from tests.support import one_stage

pytestmark = pytest.mark.usefixtures("prefect_server")

ROLES = ("generator", "action", "reviewer")


def _roles(api_base: str, model: str) -> list[str]:
    return [f"models.{r}={model}" for r in ROLES] + ["models.api_base=" + json.dumps({r: api_base for r in ROLES})]


def test_synthesis_attempts_against_the_embedded_model_are_all_accounted_for(tmp_path, katan_transformers):
    from storage import Catalog, DatasetStore

    srv = katan_transformers
    root = tmp_path / "root"
    sets = [f"storage.root={root}", "synthesize.enabled=true", "synthesize.attempts=3", "synthesize.turns=2",
            "synthesize.involved_classes=[[GorillaFileSystem]]", "synthesize.exemplars=1", "synthesize.max_iterations=2",
            "synthesize.candidates=2", "synthesize.reviewers=3", "synthesize.config_max_tokens=160",
            "synthesize.query_max_tokens=48", "synthesize.action_max_tokens=48", "synthesize.concurrency=2",
            *_roles(srv.api_base, "openai/smollm2")]
    cfg = load_config("embedded", overrides=sets)
    before = srv.requests()
    ref = one_stage("synthesize", None, cfg)
    asked = srv.requests() - before

    store = DatasetStore(root)
    attempts_ref = store.ref("synthesis_attempts", ref.parents[0])
    st = ref.stats
    assert attempts_ref.rows == 3 and st["shards"] == 2  # waves of 2 attempts
    # every attempt ends in exactly one place: an accepted trajectory or a reject with its stop reason
    assert ref.rows + ref.rejects == 3 == st["accepted"] + (3 - st["accepted"])
    assert ref.rows == st["accepted"]
    cat = Catalog(root)
    by_reason = {r["stop_reason"]: r["n"] for r in cat.sql(
        "select stop_reason, count(*) n from synthesis_attempts group by stop_reason").to_pylist()}
    assert sum(by_reason.values()) == 3 and set(by_reason) <= set(STOP_REASONS)
    failed = {r["stop_reason"]: r["n"] for r in cat.sql(
        "select stop_reason, count(*) n from synthesis_attempts where not accepted group by stop_reason").to_pylist()}
    rej = {r["reason"]: r["n"] for r in cat.sql(
        "select reason, count(*) n from rejects where stage = 'synthesize' group by reason").to_pylist()}
    assert rej == failed
    # the per-attempt accounting matches what the server saw (remote roles: no guided steps, no cache)
    calls = cat.sql("select sum(llm_calls) n from synthesis_attempts").to_pylist()[0]["n"]
    assert calls == asked > 0
    # funnel: attempts -> config ok -> turns -> accepted is consistent
    assert st["attempts"] == 3 and st["config_ok"] <= 3
    for t in st["turns"].values():
        assert t["reached"] >= t["query_ok"] >= t["consensus"] >= t["verified"]
    # a rerun with the same config is a cache hit: same id, nothing asked
    again = one_stage("synthesize", None, cfg)
    assert again.dataset_id == ref.dataset_id and srv.requests() - before == asked


def test_data_flow_mixes_synthesized_trajectories_into_D(tmp_path, katan_echo):
    from flows.data import data_flow
    from storage import Catalog

    srv = katan_echo()
    root = tmp_path / "root"
    roles = ("generator", "verifier", "augmenter", "action", "reviewer")
    sets = [f"storage.root={root}", "ingest.limit=2", "awareness.limit=4", "synthesize.attempts=2",
            "synthesize.max_iterations=1"] + [f"models.{r}=openai/echo" for r in roles]
    sets.append("models.api_base=" + json.dumps({r: srv.api_base for r in roles}))
    refs = data_flow(load_config("embedded", overrides=sets))
    synth, D = refs["synthesized"], refs["trajectories"]
    assert D.parents[1] == synth.dataset_id and len(D.parents) == 2  # D = mix(ingested, synthesized)
    # the echo "generator" repeats the prompt, exemplar included: the validator refuses the copy
    assert synth.rows == 0 and synth.rejects == 2 and synth.stats["stop_reasons"] == {"config_invalid": 2}
    cat = Catalog(root)
    rows = cat.sql("select config_errors from synthesis_attempts").to_pylist()
    assert [r["config_errors"][0].split(":")[0] for r in rows] == ["copied_exemplar"] * 2
    funnel = cat.sql("select stage, rows_in, rows_out, rejects from funnel_latest order by position").to_pylist()
    assert funnel[0] == {"stage": "synthesized", "rows_in": 2, "rows_out": 0, "rejects": 2}
    assert cat.sql("select count(*) n from trajectories_latest").to_pylist()[0]["n"] == 2
    # every recipe of docs/sql.md runs through the user's read-only path, and the first one counts
    # each trajectory of the trained-on D once (it counted ingest's and mix's copies: 190 for 95)
    import re

    blocks = re.findall(r"```sql\n(.*?)```", (Path(__file__).resolve().parents[2] / "docs" / "sql.md").read_text(), re.S)
    code = ["\n".join(line for line in b.splitlines() if not line.lstrip().startswith("--")) for b in blocks]
    recipes = [q.strip() for c in code for q in c.split(";") if q.strip()]
    assert len(recipes) >= 15
    for q in recipes:
        cat.user_sql(q)  # raises on a recipe that no longer runs
    per_source = cat.user_sql(recipes[0]).to_pylist()
    n = cat.sql("select count(distinct trajectory_id) from trajectories").column(0)[0].as_py()
    assert sum(r["count_star()"] for r in per_source) == n, per_source
    # the user's query from the issue, through the CLI
    out = subprocess.run([str(Path(sys.executable).parent / "progra"), "sql",
                          "select stop_reason, count(*) n from synthesis_attempts group by stop_reason",
                          "--root", str(root), "--format", "json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "config_invalid" in out.stdout
