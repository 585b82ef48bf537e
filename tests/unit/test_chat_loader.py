import json

from progra_core.sources.chat import iter_hf_folder, iter_jsonl
from tests.reliability.corpus import chat as good  # the corpus's good record: two turns, three calls


def test_good_records(tmp_path):
    p = tmp_path / "ok.jsonl"
    p.write_text(json.dumps(good("a")) + "\n\n" + json.dumps(good("b")) + "\n")
    out = list(iter_jsonl(p))
    rows = [r for r, _ in out if r]
    assert [r["trajectory_id"] for r in rows] == ["jsonl:a", "jsonl:b"]
    r = rows[0]
    assert r["n_turns"] == 2 and r["n_calls"] == 3 and r["scenario"] == "You manage files."
    t0 = r["turns"][0]
    assert [c["name"] for c in t0["actions"][0]["calls"]] == ["cd", "ls"]
    assert t0["actions"][0]["observations"] == ["ok", "a.txt"]  # matched by tool_call_id
    assert t0["reply"] == "Done: a.txt"
    assert r["turns"][1]["actions"][0]["observations"] == ["a.txt"]


def test_bad_records_land_in_rejects_with_specific_reasons(tmp_path):
    """The reliability corpus, straight through the loader (the same file runs through the whole
    data flow in tests/reliability/test_bad_input.py)."""
    from tests.reliability import corpus

    p = tmp_path / "bad.jsonl"
    cases = corpus.write(p)
    out = list(iter_jsonl(p))
    assert len(out) == len(cases)  # in = out + rejects
    for (label, _, reason), (row, rej) in zip(cases, out, strict=True):
        if reason is None:
            assert row is not None, (label, rej)
        else:
            assert rej is not None and rej["reason"] == reason and rej["detail"], (label, reason, rej)
    first_bad = next(i for i, (_, _, r) in enumerate(cases) if r)
    assert out[first_bad][1]["input_id"] == f"jsonl:bad:{first_bad + 1}"  # no id: file stem and line number
    assert len(out[first_bad + 1][1]["payload"]) <= 4096 + 40  # raw text kept, truncated


def test_hf_folder(tmp_path):
    import datasets

    recs = [good("h1"), good("h2")]
    for r in recs:
        r["tools"] = json.dumps(r["tools"])
        for m in r["messages"]:
            for tc in m.get("tool_calls") or []:
                if not isinstance(tc["function"]["arguments"], str):
                    tc["function"]["arguments"] = json.dumps(tc["function"]["arguments"])
    # Arrow unifies the message structs (missing keys become nulls), as a real HF export does
    ds = datasets.Dataset.from_list([{"id": r["id"], "tools": r["tools"], "messages": r["messages"]} for r in recs])
    ds.save_to_disk(str(tmp_path / "hfds"))
    out = list(iter_hf_folder(tmp_path / "hfds"))
    rows = [r for r, _ in out if r]
    assert [r["trajectory_id"] for r in rows] == ["hf:h1", "hf:h2"], [x for _, x in out if x]
    assert rows[0]["n_calls"] == 3
