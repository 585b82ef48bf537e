"""The bad-input corpus: JSONL lines a user's file might hold, each with the reject reason it must
end in (``None``: a good record that must become a trajectory). Chat-format and BFCL-format
records; truncated JSON, wrong types, unknown functions, unparsable and malicious call strings,
empty turns, huge fields, non-UTF-8 bytes, duplicate ids, deep nesting."""

from __future__ import annotations

import json

TOOLS = [{"type": "function", "function": {"name": "ls", "parameters": {"type": "object", "properties": {}}}},
         {"type": "function", "function": {"name": "cd", "parameters": {"type": "object", "properties": {"folder": {"type": "string"}}}}}]
USER = {"role": "user", "content": "Go to docs and list the files."}


def chat(i: str, **kw) -> dict:
    """A good chat-format record; keyword arguments replace its fields."""
    rec = {"id": i, "tools": TOOLS, "messages": [
        {"role": "system", "content": "You manage files."},
        USER,
        {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "cd", "arguments": json.dumps({"folder": "docs"})}},
            {"id": "c2", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c2", "content": "a.txt"},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        {"role": "assistant", "content": "Done: a.txt"},
        {"role": "user", "content": "Thanks, list again"},
        {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "ls", "arguments": {}}}]},
        {"role": "tool", "content": "a.txt"}]}
    rec.update(kw)
    return rec


def msgs(i: str, *messages: dict) -> dict:
    return {"id": i, "tools": TOOLS, "messages": list(messages)}


def call(name: str, arguments="{}") -> dict:
    return {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}]}


def bfcl(i: str, **kw) -> dict:
    """A good BFCL-format record (two turns in the file system), fields replaced by ``kw``."""
    rec = {"id": i, "involved_classes": ["GorillaFileSystem"],
           "initial_config": {"GorillaFileSystem": {"root": {"alex": {"type": "directory", "contents": {
               "docs": {"type": "directory", "contents": {"a.txt": {"type": "file", "content": "budget notes"}}}}}}}},
           "question": [[{"role": "user", "content": "Go into docs."}], [{"role": "user", "content": "Show me what is there."}]],
           "ground_truth": [["cd(folder='docs')"], ["ls()"]]}
    rec.update(kw)
    return rec


def gt(i: str, *calls: str) -> dict:
    """A BFCL-format record whose first turn's ground truth is ``calls``."""
    return bfcl(i, ground_truth=[list(calls), ["ls()"]])


def _j(rec) -> bytes:
    return json.dumps(rec).encode()


def cases() -> list[tuple[str, bytes, str | None]]:
    """(label, JSONL line, expected reject reason or None)."""
    return [
        ("good chat", _j(chat("good-1")), None),
        ("good chat, content parts", _j(chat("good-2", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                                                                call("ls"), {"role": "tool", "content": "x"}])), None),
        ("good BFCL format", _j(bfcl("good-3")), None),
        # truncated / malformed JSON
        ("truncated object", b'{"id": "t1", "messages": [', "invalid_json"),
        ("truncated string", b'{"id": "t2", "messages": [{"role": "user", "content": "hel', "invalid_json"),
        ("trailing garbage", _j(chat("t3")) + b" }", "invalid_json"),
        ("single quotes", b"{'id': 't4', 'messages': []}", "invalid_json"),
        ("NaN literal", b'{"id": "t5", "messages": NaN}', "non_finite_number"),
        ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "too_deep"),
        # wrong types
        ("array record", b"[1, 2, 3]", "not_an_object"),
        ("string record", b'"just text"', "not_an_object"),
        ("null record", b"null", "not_an_object"),
        ("no messages", _j({"id": "w1"}), "missing_messages"),
        ("messages is a string", _j({"id": "w2", "messages": "hello"}), "bad_messages"),
        ("message is a list", _j(msgs("w3", ["user", "hi"])), "bad_message"),
        ("content is a number", _j(msgs("w4", {"role": "user", "content": 5})), "bad_content"),
        ("content part without text", _j(msgs("w5", {"role": "user", "content": [{"type": "image"}]})), "bad_content"),
        ("tools is a string", _j(chat("w6", tools="ls, cd")), "bad_tools"),
        ("tool without a name", _j(chat("w7", tools=[{"type": "function", "function": {"parameters": {}}}])), "bad_tools"),
        ("initial_config is a list", _j(chat("w8", initial_config=[1])), "bad_initial_config"),
        ("initial_config is not JSON", _j(chat("w9", initial_config="{oops")), "bad_initial_config"),
        ("involved_classes is a string", _j(chat("w10", involved_classes="GorillaFileSystem")), "bad_involved_classes"),
        ("unknown role", _j(msgs("w11", {"role": "wizard", "content": "x"})), "unknown_role"),
        ("BFCL question is a string", _j(bfcl("w12", question="Go into docs.")), "bad_question"),
        ("BFCL ground truth has fewer turns", _j(bfcl("w13", ground_truth=[["cd(folder='docs')"]])), "ground_truth_mismatch"),
        ("BFCL unknown class", _j(bfcl("w14", involved_classes=["NotAClass"])), "bad_environment"),
        ("BFCL config the class cannot load", _j(bfcl("w15", initial_config={"GorillaFileSystem": {"root": 7}})), "bad_environment"),
        # empty turns
        ("empty messages", _j({"id": "e1", "messages": []}), "empty_messages"),
        ("blank user message", _j(msgs("e2", {"role": "user", "content": "   "})), "empty_turn"),
        ("null user message", _j(msgs("e3", {"role": "user", "content": None})), "empty_turn"),
        ("assistant before any user", _j(msgs("e4", {"role": "assistant", "content": "hello"})), "no_user_turn"),
        ("only a system message", _j(msgs("e5", {"role": "system", "content": "rules"})), "no_user_turn"),
        ("BFCL turns all blank", _j(bfcl("e6", question=[[{"role": "user", "content": ""}], []])), "empty_turn"),
        # tool calls: unknown functions, bad arguments, malicious names
        ("unknown function", _j(msgs("f1", USER, call("rm_rf"))), "unknown_function"),
        ("truncated arguments", _j(msgs("f2", USER, call("cd", '{"folder": "do'))), "bad_arguments_json"),
        ("arguments are a list", _j(msgs("f3", USER, call("ls", "[1]"))), "bad_arguments_json"),
        ("arguments are a number", _j(msgs("f4", USER, call("ls", 5))), "bad_arguments_json"),
        ("dunder function", _j(msgs("f5", USER, call("__import__"))), "bad_function_name"),
        ("attribute function", _j(msgs("f6", USER, call("os.system"))), "bad_function_name"),
        ("shell in the name", _j(msgs("f7", USER, call("ls; rm -rf /"))), "bad_function_name"),
        ("tool call is a string", _j(msgs("f8", USER, {"role": "assistant", "tool_calls": ["ls()"]})), "bad_tool_call"),
        ("tool_calls is an object", _j(msgs("f9", USER, {"role": "assistant", "tool_calls": {"name": "ls"}})), "bad_tool_call"),
        ("call without a name", _j(msgs("f10", USER, call(""))), "bad_tool_call"),
        ("orphan tool result", _j(msgs("f11", USER, {"role": "tool", "content": "x"})), "orphan_tool_message"),
        ("more results than calls", _j(msgs("f12", USER, call("ls"), {"role": "tool", "content": "a"}, {"role": "tool", "content": "b"})),
         "extra_tool_message"),
        # call strings (BFCL format): unparsable or malicious, parsed with ast and never run
        ("unparsable call", _j(gt("c1", "cd(folder='docs'")), "bad_call_string"),
        ("import via attribute", _j(gt("c2", "__import__('os').system('id')")), "bad_call_string"),
        ("two statements", _j(gt("c3", "ls(); import os")), "bad_call_string"),
        ("nested call argument", _j(gt("c4", "cd(folder=open('/etc/passwd').read())")), "bad_call_string"),
        ("private function", _j(gt("c5", "_private_reset()")), "bad_call_string"),
        ("lambda argument", _j(gt("c6", "cd(folder=(lambda: 'x')())")), "bad_call_string"),
        ("star-args unpacking", _j(gt("c7", "cd(*['docs'])")), "bad_call_string"),
        ("exec is not a function of the env", _j(gt("c8", "exec('print(1)')")), "unknown_function"),
        ("eval is not a function of the env", _j(gt("c9", "eval('1+1')")), "unknown_function"),
        # size and encoding
        ("huge field", _j({"id": "h1", "messages": [{"role": "user", "content": "x" * 1_000_001}]}), "field_too_large"),
        ("huge record", b'{"id": "h2", "pad": "' + b"y" * (8 * 1024 * 1024 + 10) + b'"}', "record_too_large"),
        ("huge call string", _j(gt("h3", "cd(folder='" + "d" * 1_000_001 + "')")), "field_too_large"),
        ("non-UTF-8 bytes", b'{"id": "u1", "messages": "\xff\xfe"}', "not_utf8"),
        ("latin-1 text", '{"id": "u2", "messages": [{"role": "user", "content": "café"}]}'.encode("latin-1"), "not_utf8"),
        # duplicate ids
        ("first of a pair", _j(chat("dup")), None),
        ("second with the same id", _j(chat("dup")), "duplicate_id"),
        ("BFCL record reusing a chat id", _j(bfcl("good-1")), "duplicate_id"),
    ]


def write(path) -> list[tuple[str, bytes, str | None]]:
    """Write the corpus as one JSONL file; returns the cases in line order."""
    cs = cases()
    path.write_bytes(b"\n".join(line for _, line, _ in cs) + b"\n")
    return cs
