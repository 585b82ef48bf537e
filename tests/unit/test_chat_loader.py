import json

from progra_core.datasets.chat import iter_hf_folder, iter_jsonl

TOOLS = [{"type": "function", "function": {"name": "ls", "parameters": {"type": "object", "properties": {}}}},
         {"type": "function", "function": {"name": "cd", "parameters": {"type": "object", "properties": {"folder": {"type": "string"}}}}}]


def good(i="t1"):
    return {
        "id": i,
        "tools": TOOLS,
        "messages": [
            {"role": "system", "content": "You manage files."},
            {"role": "user", "content": "Go to docs and list."},
            {"role": "assistant", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "cd", "arguments": json.dumps({"folder": "docs"})}},
                {"id": "c2", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c2", "content": "a.txt"},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            {"role": "assistant", "content": "Done: a.txt"},
            {"role": "user", "content": "Thanks, list again"},
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "ls", "arguments": {}}}]},
            {"role": "tool", "content": "a.txt"},
        ],
    }


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
    def rec(**kw):
        r = good(kw.pop("id", "x"))
        r.update(kw)
        return json.dumps(r)

    bad_msgs = lambda msgs, i: json.dumps({"id": i, "tools": TOOLS, "messages": msgs})  # noqa: E731
    u = {"role": "user", "content": "hi"}
    lines = [
        (b'{"id": "t", "messages": [', "invalid_json"),
        (b"[1, 2, 3]", "not_an_object"),
        (json.dumps({"id": "nm"}).encode(), "missing_messages"),
        (json.dumps({"id": "ms", "messages": "hello"}).encode(), "bad_messages"),
        (json.dumps({"id": "em", "messages": []}).encode(), "empty_messages"),
        (bad_msgs([{"role": "wizard", "content": "x"}], "r").encode(), "unknown_role"),
        (bad_msgs([{"role": "user", "content": "  "}], "e").encode(), "empty_turn"),
        (bad_msgs([{"role": "assistant", "content": "x"}], "n").encode(), "no_user_turn"),
        (bad_msgs([u, {"role": "assistant", "tool_calls": [{"function": {"name": "rm_rf", "arguments": "{}"}}]}], "u").encode(), "unknown_function"),
        (bad_msgs([u, {"role": "assistant", "tool_calls": [{"function": {"name": "ls", "arguments": "{oops"}}]}], "a").encode(), "bad_arguments_json"),
        (bad_msgs([u, {"role": "assistant", "tool_calls": [{"function": {"name": "ls", "arguments": "[1]"}}]}], "a2").encode(), "bad_arguments_json"),
        (bad_msgs([u, {"role": "assistant", "tool_calls": [{"function": {"name": "__import__", "arguments": "{}"}}]}], "d").encode(), "bad_function_name"),
        (bad_msgs([u, {"role": "assistant", "tool_calls": [{"function": {"name": "os.system", "arguments": "{}"}}]}], "d2").encode(), "bad_function_name"),
        (bad_msgs([u, {"role": "assistant", "tool_calls": ["ls()"]}], "s").encode(), "bad_tool_call"),
        (bad_msgs([u, {"role": "tool", "content": "x"}], "o").encode(), "orphan_tool_message"),
        (bad_msgs([u, {"role": "user", "content": 5}], "c").encode(), "bad_content"),
        (json.dumps({"id": "h", "messages": [{"role": "user", "content": "x" * 1_000_001}]}).encode(), "field_too_large"),
        (b'{"id": "bin", "messages": "\xff\xfe"}', "not_utf8"),
        (rec(id="x", tools="nope").encode(), "bad_tools"),
        (rec(id="cfg", initial_config=[1]).encode(), "bad_initial_config"),
        (rec(id="ic", involved_classes="GorillaFileSystem").encode(), "bad_involved_classes"),
        (rec(id="dup").encode(), None),
        (rec(id="dup").encode(), "duplicate_id"),
    ]
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b"\n".join(line for line, _ in lines) + b"\n")
    out = list(iter_jsonl(p))
    assert len(out) == len(lines)  # in = out + rejects
    for (row, rej), (_, reason) in zip(out, lines, strict=True):
        if reason is None:
            assert row is not None
        else:
            assert rej is not None and rej["reason"] == reason, (reason, rej)
            assert rej["detail"]
    assert out[0][1]["input_id"] == "jsonl:bad:1"


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
