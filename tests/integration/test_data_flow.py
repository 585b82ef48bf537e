"""The data flow (ingest -> segment -> awareness -> verify -> augment -> sft_data) end to end over
real HTTP: rerun-only-downstream and one run against llm-katan serving the embedded model
(kill -9 and faults: tests/reliability)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from progra_core.config import load_config
from tests.support import flow_overrides as _overrides
from tests.support import one_stage

pytestmark = pytest.mark.usefixtures("prefect_server")

@pytest.fixture()
def written(monkeypatch):
    """Stages that wrote a new dataset (= tasks that did work rather than hit the cache)."""
    from storage import store

    seen: list[str] = []
    real = store.DatasetStore.write

    def spy(self, stage, *a, **k):
        seen.append(stage)
        return real(self, stage, *a, **k)

    monkeypatch.setattr(store.DatasetStore, "write", spy)
    return seen


def test_changing_verify_recomputes_only_downstream(tmp_path, katan_echo, written):
    from flows.data import data_flow
    from storage import Catalog

    srv = katan_echo()
    root = tmp_path / "root"
    first = data_flow(load_config("embedded", overrides=_overrides(root, srv.api_base, "openai/echo")))
    assert set(written) >= {"trajectories", "segments", "awareness", "verified", "augmented", "sft_examples"}
    assert first["segments"].rows > 10 and first["awareness"].rows + first["awareness"].rejects == first["segments"].rows
    paid = srv.requests()
    assert paid > 0

    written.clear()
    same = data_flow(load_config("embedded", overrides=_overrides(root, srv.api_base, "openai/echo")))
    assert written == [] and srv.requests() == paid  # unchanged config: nothing runs, nothing is asked
    assert {k: r.dataset_id for k, r in same.items()} == {k: r.dataset_id for k, r in first.items()}

    state = data_flow(load_config("embedded", overrides=_overrides(root, srv.api_base, "openai/echo", "verify.max_tokens=40")),
                      return_state=True)
    second = state.result()
    assert sorted(written) == ["augmented", "funnel", "sft_examples", "verified"]
    for k in ("trajectories", "segments", "awareness"):
        assert second[k].dataset_id == first[k].dataset_id
    for k in ("verified", "augmented", "sft_examples"):
        assert second[k].dataset_id != first[k].dataset_id
    asked = srv.requests() - paid
    assert asked == first["awareness"].rows  # only the verifier was asked again, once per awareness row
    cat = Catalog(str(root))
    run_id = str(state.state_details.flow_run_id)
    made = cat.sql(f"select stage from datasets where flow_run_id = '{run_id}' order by stage").column(0).to_pylist()
    assert made == ["augmented", "sft_examples", "verified"]  # lineage: what this run produced
    assert cat.sql("select count(*) from funnel_latest").column(0)[0].as_py() == 6
    # the log line, the bar and the funnel count a table stage's rows in the same way (sft_data's
    # funnel row said "897 in" for 0 augmented rows in)
    f = {r["stage"]: r for r in cat.sql("select stage, rows_in, rows_out from funnel_latest").to_pylist()}
    assert f["sft_examples"]["rows_in"] == f["augmented"]["rows_out"] == second["augmented"].rows
    assert second["sft_examples"].stats["rows_in"] == second["augmented"].rows


def test_data_flow_against_llm_katan_serving_the_embedded_model(tmp_path, katan_transformers):
    """Every role over HTTP to the real model; the funnel tells what happened to each row."""
    from flows.data import data_flow
    from storage import Catalog

    root = tmp_path / "katan"
    refs = data_flow(load_config("embedded", overrides=_overrides(
        root, katan_transformers.api_base, f"openai/{katan_transformers.name}",
        "ingest.limit=2", "awareness.limit=2", "awareness.select=shortest", "awareness.max_attempts=1",
        "awareness.max_tokens=96", "verify.max_tokens=32")))
    assert refs["segments"].rows > 2
    assert refs["awareness"].rows + refs["awareness"].rejects == 2
    assert refs["verified"].rows == refs["awareness"].rows
    assert refs["sft_examples"].rows > 0  # the cold-start part keeps D_sft non-empty
    cat = Catalog(str(root))
    funnel = cat.sql("select stage, rows_in, rows_out, rejects, llm_calls from funnel_latest order by position").to_pylist()
    assert [f["stage"] for f in funnel] == ["trajectories", "segments", "awareness", "verified", "augmented", "sft_examples"]
    aw = funnel[2]
    assert aw["rows_in"] == 2 and aw["rows_out"] + aw["rejects"] == 2 and aw["llm_calls"] >= 2
    reasons = cat.sql("select reason from verified").column(0).to_pylist()
    assert set(reasons) <= {"ok", "mismatch", "parse_error", "empty"}
    assert len(katan_transformers.log.read_text()) > 0


def test_augment_and_sft_data_stages_on_verified_rows(tmp_path, katan_echo):
    """The embedded 135M model verifies (almost) nothing, so here D_ver is written as a strong
    generator and verifier would leave it (awareness that names the call, equal = true), and the
    real augment and sft_data stages run on it, the paraphrase over HTTP."""
    from datetime import UTC, datetime

    import pyarrow as pa

    from flows.ingest import ingest_flow
    from progra_core.data import awareness as aw
    from progra_core.data import verify as ver
    from progra_core.data.augment import MASK
    from progra_core.prompts.tools import describe_calls
    from storage import Catalog, DatasetStore

    srv = katan_echo()
    root = tmp_path / "aug"
    cfg = load_config("embedded", overrides=_overrides(root, srv.api_base, "openai/echo", "augment.seed=3", "augment.ops_per_row=1"))
    segs = one_stage("segment", ingest_flow(cfg).dataset_id, cfg)
    store = DatasetStore(str(root))
    rows = store.read(segs).to_pylist()[:12]
    now = datetime.now(UTC)
    awareness = []
    for i, r in enumerate(rows):
        s, p = f"The user asked: {r['query']}", f"Next, call {describe_calls(r['target_calls'])}."
        awareness.append({"awareness_id": f"a{i:02d}", "segment_id": r["segment_id"], "generator": "hand", "prompt_version": "hand",
                          "text": f"<summary>{s}</summary>\n<plan>{p}</plan>\n<rationale>It is the next step.</rationale>",
                          "summary": s, "plan": p, "rationale": "It is the next step.", "attempts": 1, "latency_ms": 0.0,
                          "prompt_tokens": 0, "completion_tokens": 0, "created_at": now})
    aw_ref = store.write("awareness", pa.Table.from_pylist(awareness, schema=aw.AWARENESS), parents=[segs.dataset_id], code_version="hand")
    verified = [{"awareness_id": a["awareness_id"], "segment_id": a["segment_id"], "verifier": "hand",
                 "predicted_calls": r["target_calls"], "predicted_text": None, "equal": i % 4 != 3, "reason": "ok" if i % 4 != 3 else "mismatch",
                 "latency_ms": 0.0, "prompt_tokens": 0, "completion_tokens": 0} for i, (a, r) in enumerate(zip(awareness, rows, strict=True))]
    ver_ref = store.write("verified", pa.Table.from_pylist(verified, schema=ver.VERIFIED), parents=[aw_ref.dataset_id], code_version="hand")

    aug = one_stage("augment", ver_ref.dataset_id, cfg)
    cat = Catalog(str(root))
    out = cat.sql(f"select * from augmented where dataset_id = '{aug.dataset_id}'").to_pylist()
    ops = Counter(r["op"] for r in out)
    equal = 9  # rows 3, 7 and 11 were not verified: never augmented
    assert ops["none"] == equal and {r["awareness_id"] for r in out} <= {a["awareness_id"] for i, a in enumerate(awareness) if i % 4 != 3}
    assert sum(ops.values()) - equal + aug.rejects == equal  # one op per verified row: a row or a reject
    rejected = Counter(cat.sql(f"select reason from rejects where dataset_id = '{aug.dataset_id}'").column(0).to_pylist())
    assert all(k.startswith("paraphrase_") or k in ("no_perturbation", "nothing_to_mask") for k in rejected)
    for r in out:
        names = [d.get("function", d)["name"] for d in json.loads(r["tools"])]
        assert all(c["name"] in names for c in r["target_calls"])  # tools and a_fc stay coherent
        if r["op"] == "schema_perturb":
            assert r["mapping"] and any(n in r["text"] for n in json.loads(r["mapping"])["functions"]) or json.loads(r["mapping"])["values"]
        if r["op"] == "word_mask":  # the inputs are masked, never the note or the target
            shown = [r["query"] or ""] + [m["content"] or "" for m in (r["history"] or []) + (r["prior_steps"] or [])]
            assert any(MASK in t for t in shown) and MASK not in r["text"]
    assert ops["schema_perturb"] + ops["word_mask"] > 0
    assert cat.sql("select op, count(*) from augmented group by op").num_rows == len(ops)

    sft = one_stage("sft_data", aug.dataset_id, cfg)
    ex = cat.sql(f"select kind, split, completion[1].content c from sft_examples where dataset_id = '{sft.dataset_id}'").to_pylist()
    kinds = Counter(e["kind"] for e in ex)
    assert kinds["awareness"] == len(out) and kinds["cold_start"] > 0
    assert all(e["c"].startswith("<summary>") and "<answer>[" in e["c"] for e in ex if e["kind"] == "awareness")
    assert all(e["c"].startswith("<answer>[") for e in ex if e["kind"] == "cold_start")
