"""Hypothesis fuzzing with a deadline: the call parser, the comparison, the record loaders and
the config loader never hang and raise nothing but their documented error types."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from progra_core.calls import Call, CallParseError, format_calls, parse_calls, schema_equal
from progra_core.config import ConfigInputError, load_config
from progra_core.sources import chat

# -- Hypothesis: no hang, no undocumented exception ---------------------------------------------------

FUZZ = settings(max_examples=80, deadline=2000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
call_chars = st.sampled_from(list("[](){}'\",=:.-+_ \n\\#`@*xyzab019eEjJ") + ["0x", "1e", "lambda", "__", "```", "\ud800", "é"])
call_text = st.lists(call_chars, max_size=120).map("".join) | st.text(max_size=200)
scalars = st.none() | st.booleans() | st.integers(-2 ** 200, 2 ** 200) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=4), max_leaves=12)


@FUZZ
@given(call_text)
def test_fuzz_parse_calls_only_raises_call_parse_error(text):
    try:
        calls = parse_calls(text)
    except CallParseError:
        return
    assert schema_equal(calls, calls)
    assert parse_calls(format_calls(calls)) == calls


@FUZZ
@given(st.dictionaries(st.sampled_from("abc"), values, max_size=3), st.dictionaries(st.sampled_from("abc"), values, max_size=3))
def test_fuzz_schema_equal_is_a_verdict_reflexive_and_symmetric(a, b):
    ca, cb = [Call("f", a)], [Call("f", b)]
    assert schema_equal(ca, ca) and schema_equal(ca, cb) == schema_equal(cb, ca)
    assert schema_equal(format_calls(ca), format_calls(ca))


records = st.recursive(scalars | st.just(float("nan")) | st.just(10 ** 30),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(
                           st.sampled_from(["id", "messages", "role", "content", "tool_calls", "function", "name", "arguments",
                                            "tool_call_id", "split", "tools", "env", "involved_classes", "initial_config",
                                            "long_context", "question", "ground_truth", "x"]), c, max_size=5), max_leaves=25)


@FUZZ
@given(st.lists(records, min_size=1, max_size=4))
def test_fuzz_chat_records_become_rows_or_rejects(recs):
    out = list(chat._records_to_rows(((f"r{k}", r, None) for k, r in enumerate(recs)), "fuzz"))
    assert len(out) == len(recs) and all((row is None) != (rej is None) for row, rej in out)
    assert all(rej["reason"] and rej["detail"] for _, rej in out if rej)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_jsonl_bytes_become_rows_or_rejects(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "f.jsonl"
    path.write_bytes(data)
    out = list(chat.iter_jsonl(path))
    lines = data.split(b"\n")
    assert len(out) == len(lines) - (lines[-1] == b"")  # every line a row or a reject


KEYS = ["llm.timeout_s", "ingest.held_out_percent", "models.policy", "evaluate.limit", "grpo.temperature", "ingest.jsonl",
        "storage.root", "sft.lora_r", "method", "nope.x", "llm", "evaluate.categories"]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(KEYS), st.text(max_size=30) | st.sampled_from(
    [".inf", "true", "no", "null", "[1, 2]", "{a: 1}", "&a x", "*a", "!!python/object:os.system", "1e999", "-0"])), max_size=3))
def test_fuzz_config_overrides_load_or_raise_a_clear_error(pairs):
    from pydantic import ValidationError

    try:
        load_config("embedded", overrides=[f"{k}={v}" for k, v in pairs])
    except (ValidationError, ConfigInputError, ValueError):
        pass
