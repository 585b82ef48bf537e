"""The bad-input corpus (tests/reliability/corpus.py) through the whole data flow: every bad
record ends in ``rejects`` with its specific reason and a detail, the good ones become
trajectories and go on, the run completes, and in = out + rejects."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from progra_core.config import load_config
from tests.reliability import corpus

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.server]

ROLES = ("generator", "verifier", "augmenter")


def test_every_bad_record_is_rejected_with_its_reason_and_the_run_completes(tmp_path, katan_echo):
    from flows.data import data_flow
    from storage import Catalog, DatasetStore

    srv = katan_echo()
    cases = corpus.write(tmp_path / "corpus.jsonl")
    bad = [(label, reason) for label, _, reason in cases if reason]
    assert len(bad) >= 30
    cfg = load_config("embedded", overrides=[
        f"storage.root={tmp_path / 'root'}", f"ingest.jsonl=[{tmp_path / 'corpus.jsonl'}]", "ingest.bfcl_categories=[]",
        "synthesize.enabled=false", "awareness.limit=null", *[f"models.{r}=openai/echo" for r in ROLES],
        "models.api_base=" + json.dumps({r: srv.api_base for r in ROLES})])
    refs = data_flow(cfg)  # completes: no record can stop it

    cat, store = Catalog(str(tmp_path / "root")), DatasetStore(str(tmp_path / "root"))
    rejected = store.read_rejects(refs["trajectories"]).to_pylist()
    assert [r["reason"] for r in rejected] == [reason for _, reason in bad]  # in file order, each with its reason
    assert all(r["detail"] and r["input_id"].startswith("jsonl:") for r in rejected)
    counts = cat.sql("select reason, count(*) n from rejects where stage = 'ingest' group by 1").to_pylist()
    by_reason = {r["reason"]: r["n"] for r in counts}
    assert by_reason == dict(Counter(reason for _, reason in bad))
    ids = sorted(cat.sql("select trajectory_id from trajectories").column(0).to_pylist())
    assert ids == ["jsonl:dup", "jsonl:good-1", "jsonl:good-2", "jsonl:good-3"]
    assert len(cases) == refs["trajectories"].rows + refs["trajectories"].rejects  # in = out + rejects
    # the good records went all the way: segments, awareness attempts (echo text is no note: rejects)
    seg = refs["segments"]
    assert seg.rows == cat.sql("select count(*) from segments").column(0)[0].as_py() > 0
    aw = refs["awareness"]
    assert aw.rows + aw.rejects == seg.rows
    for stage in ("verified", "augmented", "sft_examples"):
        assert refs[stage].dataset_id  # committed, even with nothing to carry
    # a malicious call string never ran: the file system of the good BFCL record is untouched by it
    (good3,) = cat.sql("select turns from trajectories where trajectory_id = 'jsonl:good-3'").column(0).to_pylist()
    assert [c["name"] for t in good3 for a in t["actions"] for c in a["calls"]] == ["cd", "ls"]
    assert good3[1]["actions"][0]["observations"] == ['{"current_directory_content": ["a.txt"]}']
