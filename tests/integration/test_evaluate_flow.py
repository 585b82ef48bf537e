"""The evaluate flow under a real Prefect server: base, a trained adapter and an endpoint (a real
llm-katan on loopback, reached through LiteLLM) on the held-out BFCL slice; eval_results and
eval_summary queryable; Table 1 published and printed; reruns never ask the endpoint twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from progra_core.config import load_config
from tests.support import flow_overrides as _overrides

pytestmark = pytest.mark.usefixtures("prefect_server")

EVAL = ["evaluate.limit=1", "evaluate.select=shortest", "evaluate.trials=1", "evaluate.max_tokens=8",
        "evaluate.max_steps_per_turn=2", "sft.max_steps=1", "sft.batch_size=2", "sft.max_length=4096",
        "awareness.limit=2", "method=wo_pag_rl", "evaluate.next_call_limit=0", "sft_data.cold_start_min=16",
        "evaluate.categories=[base,miss_func,miss_param]"]


REPO = Path(__file__).resolve().parents[2]


def test_evaluate_flow_base_trained_and_endpoint(tmp_path, katan_echo, tiny_llama, monkeypatch):
    from flows.cli import app
    from flows.data import data_flow
    from flows.evaluate import evaluate
    from flows.train import train_flow
    from storage import Catalog, store

    srv = katan_echo()
    root = tmp_path / "eval"
    cfg = load_config("embedded", overrides=_overrides(root, srv.api_base, "openai/echo", f"models.policy={tiny_llama}",
                                                       f"evaluate.api_base={srv.api_base}", *EVAL))
    data = data_flow(cfg)
    trained = train_flow(data["sft_examples"], cfg)["sft"].dataset_id
    before = srv.requests()
    refs = evaluate(["base", "trained", "openai/echo"], trained, cfg)
    assert sorted(refs) == sorted(["base/base", f"{trained}/pag_sft", "openai/echo/endpoint"])
    asked = srv.requests() - before
    assert asked > 0  # the endpoint under test answered over HTTP

    cat = Catalog(str(root))
    rows = cat.sql("select model_ref, method, category, entry_id, passed, turn_passed, n_steps from eval_results").to_pylist()
    assert len(rows) == 9 and {r["category"] for r in rows} == {"base", "miss_func", "miss_param"}
    assert all(r["n_steps"] >= 1 and len(r["turn_passed"]) >= 1 for r in rows)
    assert len({r["entry_id"] for r in rows}) == 3  # the same held-out slice for every model
    summary = cat.sql("select * from eval_summary").to_pylist()
    assert len(summary) == 9 and all(s["runs"] == 1 and s["accuracy"] == 0.0 for s in summary)
    lineage = {r["dataset_id"]: r["parents"] for r in cat.sql("select dataset_id, parents from datasets "
                                                             "where stage = 'eval_results'").to_pylist()}
    assert lineage[refs[f"{trained}/pag_sft"].dataset_id] == [trained]
    # every dataset's id is the hash of what its manifest records: config, parents, code version (so
    # the manifest says exactly what the cache key covers, evaluate's subject and the models' payload included)
    from storage import DatasetStore, fingerprint

    listed = DatasetStore(str(root)).list()
    assert {"trajectories", "verified", "sft_examples", "models", "train_log", "eval_results"} <= {r.stage for r in listed}
    assert [r.dataset_id for r in listed if fingerprint(r.stage, r.config, r.parents, r.code_version) != r.dataset_id] == []

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def table_artifact():
        async with get_client() as c:
            return await c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["eval-table"])))

    import asyncio

    md = asyncio.run(table_artifact())[0].data
    assert "| Model | Method | Overall | Base | Miss F. | Miss P. |" in md and trained[:8] in md  # ids print as 8-hex prefixes
    assert "tau2" not in md.split("\n")[0]  # the title names only what ran

    written: list[str] = []
    real = store.DatasetStore.write
    monkeypatch.setattr(store.DatasetStore, "write", lambda self, stage, *a, **k: written.append(stage) or real(self, stage, *a, **k))
    again = evaluate(["base", "trained", "openai/echo"], trained, cfg)
    assert written == [] and {k: v.dataset_id for k, v in again.items()} == {k: v.dataset_id for k, v in refs.items()}
    cfg.evaluate.max_steps_per_turn = 3  # a new evaluation, but the endpoint's answers come from the cache
    changed = evaluate(["openai/echo"], None, cfg)
    assert changed["openai/echo/endpoint"].dataset_id != refs["openai/echo/endpoint"].dataset_id
    assert srv.requests() - before == asked

    runner = CliRunner()
    out = runner.invoke(app, ["report", "--root", str(root), "--markdown"])
    assert out.exit_code == 0, out.output
    assert "| Model | Method | Overall |" in out.output and "pag_sft" in out.output
    first, second = refs["openai/echo/endpoint"].dataset_id, changed["openai/echo/endpoint"].dataset_id
    out = runner.invoke(app, ["report", "--root", str(root), "--compare", first, second, "--markdown"])
    assert out.exit_code == 0, out.output
    assert f"Overall [{first[:8]}]" in out.output and f"Overall [{second[:8]}]" in out.output and "+0.00" in out.output
    assert "| BFCL turn acc. (mean per entry) |" in out.output  # the paired table reads each entry's turns
    sets = [a for o in _overrides(root, srv.api_base, "openai/echo", f"models.policy={tiny_llama}",
                                  f"evaluate.api_base={srv.api_base}", *EVAL) for a in ("--set", o)]
    n_written = len(written)
    out = runner.invoke(app, ["stage", "evaluate", "-m", "base", *sets])  # the stage rerun: a cache hit
    assert out.exit_code == 0, out.output
    assert "Overall" in out.output and refs["base/base"].dataset_id in "".join(out.output.split())
    assert "base/base: bfcl 0/3 passed" in " ".join(out.output.split())  # counted per benchmark, not pooled
    assert len(written) == n_written
    out = runner.invoke(app, ["stage", "evaluate", "-m", "no_such_model", *sets])
    assert out.exit_code == 2 and "not base/reasoning/trained" in out.output
    out = runner.invoke(app, ["report", "--root", str(root), "nope"])
    assert out.exit_code == 2 and "no evaluation dataset" in out.output
    # docs/measured.md is generated from a root like this one (the docs' numbers in one place)
    import subprocess
    import sys

    gen = subprocess.run([sys.executable, str(REPO / "scripts" / "measured.py"), "--root", str(root), "--out",
                          str(tmp_path / "measured.md")], capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr
    text = (tmp_path / "measured.md").read_text()
    assert "- **Machine**: " in text and "AMX" in text and "## Data funnel" in text and "## Models" in text
    assert "## Evaluation" in text and "--compare` (the first and the last evaluation" in text and trained in text
    assert json.loads(cat.sql("select config from datasets where dataset_id = ?", [first]).to_pylist()[0]["config"])[
        "subject"]["api_base"] == srv.api_base
