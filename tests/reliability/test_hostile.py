"""Hostile input and runaway work, one test per class of the issue, each over our own corpus
(tests/reliability/hostile.py), plus Hypothesis fuzzing of the parser, the comparison, the
record loaders and the config loader with a deadline. Every test asserts the per-class tally:
all hostile cases tried, none executed anything, hung, crashed or silently changed the run;
``PROGRA_HOSTILE_REPORT`` names a JSON file the tallies are written to (for the issue note)."""

from __future__ import annotations

import decimal
import hashlib
import json
import os
import re
import threading
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from progra_core.calls import Call, CallParseError, format_calls, normalize_calls, parse_calls, schema_equal
from progra_core.config import ConfigInputError, load_config
from progra_core.envs import budget
from progra_core.envs.bfcl import BFCLEnv
from progra_core.sources import chat
from tests.reliability import hostile as H

TALLIES: dict[str, dict] = {}


def _report(name: str, t: H.Tally) -> None:
    TALLIES[name] = t.row()
    if path := os.environ.get("PROGRA_HOSTILE_REPORT"):
        Path(path).write_text(json.dumps(TALLIES, indent=1))
    print(f"\n{name}: {t.row()}")
    assert t.failures == [], t.failures
    assert t.executed == t.hung == t.crashed == t.changed == 0 and t.tried > 0


def _budget_error(obs) -> bool:
    return isinstance(obs, list) and len(obs) == 1 and budget.budget_error(obs[0])


# -- 1. every env call within one budget ----------------------------------------------------------

def test_runaway_env_calls_become_error_observations_and_ingest_rejects(monkeypatch):
    monkeypatch.setattr(budget, "CALL_SECONDS", 1.0)
    math = lambda text: lambda: BFCLEnv({}, ["MathAPI"]).execute(text)  # noqa: E731
    cases = [(t, math(t), _budget_error) for t in [
        "power(base=10, exponent=100000000)", "power(10, 100000000)", "power(base=-7, exponent=99999999)",
        "power(base=2, exponent=70000)", "[power(base=3, exponent=5), power(base=9, exponent=10**9)]".replace("10**9", "1000000000"),
        "logarithm(value=10, base=2, precision=100000000)", "logarithm(10, 2, 5000)", "square_root(number=2, precision=10000000)",
        "square_root(2, 2000)", "add(a=" + "9" * 1300 + ", b=1)", "mean(numbers=[1, " + "7" * 1300 + "])",
        "logarithm(value=10, base=2, precision=-100000000)"]]
    # integer literals past the cap are refused by the parser already; Call objects (from records) by the budget
    for k, (label, thunk, _) in enumerate(cases):
        if "9" * 1300 in label or "7" * 1300 in label:
            cases[k] = (label, thunk, lambda obs: obs == ["Error during parsing: integer literal of more than 4096 bits"])
    for label, call in [("Call object: 1300-digit int", Call("add", {"a": 10 ** 1300, "b": 1})),
                        ("Call object: int in a list", Call("mean", {"numbers": [1, 10 ** 1300]})),
                        ("Call object: positional huge", Call("power", {}, (10, 10 ** 8)))]:
        cases.append((label, lambda call=call: BFCLEnv({}, ["MathAPI"]).execute([call]), _budget_error))
    # a ground-truth call of the last case's batch alone would pass; the batch holds the runaway one
    cases[4] = (cases[4][0], cases[4][1], lambda obs: len(obs) == 2 and "243" in obs[0] and budget.budget_error(obs[1]))
    msg = lambda: BFCLEnv(H.all_ids_message_config(), ["MessageAPI"]).execute("send_message(receiver_id='USR002', message='hi')")  # noqa: E731
    cases.append(("MessageAPI with every id taken", msg, lambda obs: _budget_error(obs) and "budget" in obs[0]))
    # the budget does not break ordinary calls: the same env keeps working after a runaway one
    def after():
        env = BFCLEnv(H.all_ids_message_config(), ["MessageAPI"])
        env.execute("send_message(receiver_id='USR002', message='hi')")
        return env.execute("list_users()")
    cases.append(("env usable after a stopped call", after, lambda obs: obs == ['{"user_list": ["Alice", "Bob"]}']))
    # ingest replays ground truth: a runaway call is that record's reject
    for label, rec in [("ingest: huge power", H.bfcl_record("r1", ["power(base=10, exponent=100000000)"])),
                       ("ingest: huge precision", H.bfcl_record("r2", ["square_root(number=2, precision=99999999)"])),
                       ("ingest: MessageAPI loop", H.bfcl_record("r3", ["send_message(receiver_id='USR002', message='hi')"],
                                                                 ("MessageAPI",), H.all_ids_message_config()))]:
        cases.append((label, lambda rec=rec: _convert(rec), lambda out: isinstance(out, chat.RecordError) and out.reason == "call_budget"))
    _report("1 env call budget", H.run_class(cases, (chat.RecordError,), deadline_s=15))


def _convert(rec):
    return chat.record_to_trajectory(rec, "jsonl", rec["id"])


# -- 2. no process-wide state ---------------------------------------------------------------------

def _state():
    import mpmath
    from bfcl_eval.eval_checker.multi_turn_eval.func_source_code import long_context

    return (decimal.getcontext().prec, decimal.getcontext().rounding, mpmath.mp.prec,
            json.dumps(long_context.LONG_WEATHER_EXTENSION, sort_keys=True, default=str))


def test_each_env_call_leaves_the_process_as_it_found_it():
    before = _state()
    calls = ["square_root(number=2, precision=500)", "logarithm(value=10, base=3, precision=700)", "square_root(2, 3)",
             "logarithm(10, 2, 1)", "square_root(number=-1, precision=9)", "logarithm(value=0, base=2, precision=40)"]
    cases = [(c, lambda c=c: (BFCLEnv({}, ["MathAPI"]).execute(c), _state()), lambda out: out[1] == before) for c in calls]

    def weather():
        env = BFCLEnv({"VehicleControlAPI": {}}, ["VehicleControlAPI"], long_context=True)
        return [env.execute("get_outside_temperature_from_google()") for _ in range(3)], _state()
    cases.append(("long-context weather writes a module dict", weather, lambda out: out[1] == before))

    def parallel():  # two episodes' MathAPI calls at once: each gets the precision it asked for
        out, errors = {}, []

        def run(p):
            try:
                env = BFCLEnv({}, ["MathAPI"])
                out[p] = [env.execute(f"square_root(number=2, precision={p})")[0] for _ in range(30)]
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        threads = [threading.Thread(target=run, args=(p,)) for p in (12, 300)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        digits = {p: {len(re.search(r"'([\d.]+)'", o).group(1)) - 1 for o in obs} for p, obs in out.items()}
        return errors, digits, _state()
    cases.append(("parallel episodes with different precisions", parallel,
                  lambda out: out[0] == [] and out[1] == {12: {12}, 300: {300}} and out[2] == before))
    _report("2 process-wide state", H.run_class(cases))


def test_every_module_level_write_in_bfcl_is_known():
    """A new bfcl-eval version that writes module state or arithmetic precision must be added to
    the budget's lists (the scan reads the installed sources)."""
    import bfcl_eval.eval_checker.multi_turn_eval.func_source_code as pkg

    writes, arithmetic = set(), set()
    for path in Path(pkg.__file__).parent.glob("*.py"):
        src = path.read_text()
        for m in re.finditer(r"^\s+([A-Z][A-Z_]{2,})(?:\[[^\]]*\]\s*=|\.(?:append|update|extend|pop|insert|clear)\(|\s*\+=)", src, re.M):
            writes.add(m.group(1))
        if re.search(r"getcontext\(\)\.\w+\s*=|mpmath\.mp\.\w+\s*=", src):
            arithmetic.add(path.stem)
    known = {name for _, _, name in budget.MODULE_STATE}
    assert writes - {"DEFAULT_STATE_COPY"} <= known, writes  # DEFAULT_STATE_COPY is read, not written (a subscript load)
    assert arithmetic <= {"math_api"}, arithmetic


# -- 3. one bad record never stops a run ----------------------------------------------------------

BAD_LINES = [
    ("list tool_call_id", json.dumps(H.with_messages("a1", replace={2: {"role": "tool", "tool_call_id": ["c1"], "content": "ok"}})).encode(), "bad_tool_call_id"),
    ("dict tool_call_id", json.dumps(H.with_messages("a2", replace={2: {"role": "tool", "tool_call_id": {"x": 1}, "content": "ok"}})).encode(), "bad_tool_call_id"),
    ("list call id", json.dumps(H.with_messages("a3", replace={1: {"role": "assistant", "tool_calls": [{"id": [1], "type": "function", "function": {"name": "ls", "arguments": "{}"}}]}})).encode(), "bad_tool_call_id"),
    ("NaN argument", H.args_line("a4", '{"folder": NaN}'), "non_finite_number"),
    ("Infinity argument", H.args_line("a5", '{"folder": Infinity}'), "non_finite_number"),
    ("-Infinity argument", H.args_line("a6", '{"folder": -Infinity}'), "non_finite_number"),
    ("1e400 argument", H.args_line("a7", '{"folder": 1e400}'), "non_finite_number"),
    ("5000-digit integer argument", H.args_line("a8", '{"folder": ' + "7" * 5000 + "}"), "number_out_of_range"),
    ("2**64 argument", H.args_line("a9", '{"folder": 18446744073709551616}'), "number_out_of_range"),
    ("NaN at record level", b'{"id": "a10", "messages": [], "x": NaN}', "non_finite_number"),
    ("5000-digit id", b'{"id": ' + b"1" * 5000 + b', "messages": []}', "number_out_of_range"),
    ("lone surrogate in content", json.dumps(H.with_messages("a12", replace={0: {"role": "user", "content": "go \ud800 now"}})).encode(), "lone_surrogate"),
    ("lone surrogate in a key", b'{"id": "a13", "\\udfff": 1, "messages": []}', "lone_surrogate"),
    ("lone surrogate in arguments", H.args_line("a14", '{"folder": "\\ud83d"}'), "lone_surrogate"),
    ("arguments nested 100k deep", H.args_line("a15", "[" * 100000 + "]" * 100000), "too_deep"),
]


def test_one_bad_record_never_stops_a_run(tmp_path):
    good = [json.dumps(H.chat(f"g{k}")).encode() for k in range(3)]
    lines = [good[0]] + [b for _, b, _ in BAD_LINES] + good[1:]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = list(chat.iter_jsonl(path))
    rows = [r for r, _ in out if r is not None]
    rejects = [j for _, j in out if j is not None]
    cases = [("in = out + rejects (one file)", lambda: (len(out), len(rows), len(rejects)),
              lambda v: v == (len(lines), 3, len(BAD_LINES)))]
    for k, (label, _, reason) in enumerate(BAD_LINES):
        rej = next((j for j in rejects if j["reason"] == reason and (j["input_id"].endswith(f":a{k + 1}") or j["input_id"].endswith(f":{k + 2}"))), None)
        cases.append((label, lambda rej=rej: rej, lambda rej: rej is not None and rej["detail"]))
    # the table build: every row stores (what used to die there now rejects earlier, or here)
    from progra_core.config import IngestConfig
    from progra_core.data.ingest import ingest

    cases.append(("ingest builds the table", lambda: ingest(IngestConfig(bfcl_categories=[], jsonl=[str(path)])),
                  lambda v: v[0].num_rows == 3 and len(v[1]) == len(BAD_LINES) and v[2]["rows"] + v[2]["rejects"] == len(lines)))
    cases.append(("HF folder: a bad record in the middle", lambda: _hf_folder(tmp_path), lambda v: v == (5, 4, 1)))
    _report("3 one bad record", H.run_class(cases))


def _hf_folder(tmp_path):
    import datasets

    recs = [H.chat(f"h{k}") for k in range(5)]
    recs[1]["split"] = "test"  # the bad one, in the middle
    for r in recs:
        r.setdefault("split", "train")
        r["tools"] = json.dumps(r["tools"])
    datasets.Dataset.from_list(recs).save_to_disk(str(tmp_path / "hf"))
    out = list(chat.iter_hf_folder(tmp_path / "hf"))
    return len(out), sum(r is not None for r, _ in out), sum(j is not None for _, j in out)


# -- 4. nothing silently changed ------------------------------------------------------------------

SILENT = [
    ("split test", H.chat("s1", split="test"), "bad_split"),
    ("split HELD_OUT", H.chat("s2", split="HELD_OUT"), "bad_split"),
    ("split held-out", H.chat("s3", split="held-out"), "bad_split"),
    ("split null", H.chat("s4", split=None), "bad_split"),
    ("BFCL split test", H.bfcl_record("s5", ["add(a=1, b=2)"], split="test"), "bad_split"),
    ("long_context 'false'", H.chat("s6", long_context="false"), "bad_long_context"),
    ("long_context 1", H.chat("s7", long_context=1), "bad_long_context"),
    ("unknown env", H.chat("s8", env="bfcl2", involved_classes=["MathAPI"]), "unknown_env"),
    ("env without classes", H.chat("s9", env="bfcl"), "bad_involved_classes"),
    ("unknown class", H.chat("s10", involved_classes=["MathsAPI"]), "bad_involved_classes"),
    ("initial_config as JSON text", H.chat("s11", involved_classes=["MathAPI"], initial_config="{}"), "bad_initial_config"),
    ("initial_config a list", H.chat("s12", initial_config=[]), "bad_initial_config"),
    ("two replies in a turn", H.with_messages("s13", {"role": "assistant", "content": "Also done."}), "two_replies"),
    ("content beside tool_calls", H.with_messages("s14", replace={1: {"role": "assistant", "content": "I will cd.", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "cd", "arguments": "{}"}}]}}), "content_with_tool_calls"),
    ("unmatched tool_call_id", H.with_messages("s15", replace={2: {"role": "tool", "tool_call_id": "c9", "content": "ok"}}), "unmatched_tool_call_id"),
    ("duplicate call ids", H.with_messages("s16", replace={1: {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "cd", "arguments": "{}"}},
        {"id": "c1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]}}), "bad_tool_call_id"),
    ("tool result after the reply", H.with_messages("s17", {"role": "tool", "tool_call_id": "c1", "content": "late"}), "orphan_tool_message"),
    ("category a number", H.chat("s18", category=3), "bad_category"),
]


def test_nothing_is_silently_changed(tmp_path):
    cases = [(label, lambda rec=rec: _convert(rec), lambda out, reason=reason: isinstance(out, chat.RecordError) and out.reason == reason)
             for label, rec, reason in SILENT]
    path = tmp_path / "blank.jsonl"
    path.write_bytes(json.dumps(H.chat("b1")).encode() + b"\n   \n\t\n" + json.dumps(H.chat("b2")).encode() + b"\n")
    cases.append(("whitespace-only lines are counted", lambda: [j["reason"] for _, j in chat.iter_jsonl(path) if j],
                  lambda v: v == ["blank_line", "blank_line"]))
    cases.append(("a record without split is train (the stated rule)", lambda: _convert(H.chat("d1"))["split"], lambda v: v == "train"))
    cases.append(("held_out stays held_out", lambda: _convert(H.chat("d2", split="held_out"))["split"], lambda v: v == "held_out"))
    _report("4 nothing silently changed", H.run_class(cases, (chat.RecordError,)))


# -- 5. comparisons always give a verdict; parsing linear and capped first ---------------------------

BIG = "9" * 400
COMPARE = [
    ("400-digit ints equal", f"[f(a={BIG})]", f"[f(a={BIG})]", True),
    ("400-digit int vs float", f"[f(a={BIG})]", "[f(a=1e308)]", False),
    ("2**53+1 vs 2**53", "[f(a=9007199254740993)]", "[f(a=9007199254740992)]", False),
    ("2**53+1 vs 2.0**53", "[f(a=9007199254740993)]", "[f(a=9007199254740992.0)]", False),
    ("1 vs 1.0", "[f(a=1)]", "[f(a=1.0)]", True),
    ("-0.0 vs 0.0 in a multiset", "[f(a=[0.0, -0.0, 1])]", "[f(a=[1, -0.0, 0])]", True),
    ("-0.0 order", "[f(a=[-0.0, 0.5]), g()]", "[g(), f(a=[0.5, 0.0])]", True),
    ("True vs 1", "[f(a=True)]", "[f(a=1)]", False),
    ("long hex literal", "[f(a=0x" + "f" * 5000 + ")]", "[f(a=1)]", False),
    ("1000-bit hex equal", "[f(a=0x" + "f" * 250 + ")]", "[f(a=0x" + "f" * 250 + ")]", True),
    ("nan name", "[f(a=nan)]", "[f(a=nan)]", False),
    ("1e999 literal", "[f(a=1e999)]", "[f(a=1e999)]", False),
]


def test_every_comparison_returns_a_verdict():
    cases = [(label, lambda a=a, b=b: (schema_equal(a, b), schema_equal(b, a)), lambda v, want=want: v == (want, want))
             for label, a, b, want in COMPARE]
    for label, a, _, _ in COMPARE:  # format and hash what parses: no exception
        def fmt(a=a):
            try:
                calls = parse_calls(a)
            except CallParseError as e:
                return e
            return parse_calls(format_calls(calls)) == calls and hash(calls[0]) == hash(parse_calls(format_calls(calls))[0])
        cases.append((f"format+hash: {label}", fmt, lambda v: v is True or isinstance(v, CallParseError)))
    # linear and capped first: adversarial texts at the cap's size finish well inside the deadline
    from progra_core.data.awareness import AwarenessParseError, parse_awareness
    from progra_core.data.verify import extract_call_text
    from progra_core.prompts.policy import parse_action

    n = 60_000
    texts = {"fence + spaces": "```" + " " * n + "x", "fence + newlines": "```python" + "\n " * (n // 2), "blank lines": " \n" * n + "x",
             "summary tags": "<summary>" * (n // 9), "call brackets": "[a(" * (n // 3), "close parens": "[a(" + ")" * n,
             "over the cap": "[f(a='" + "x" * 300_000 + "')]"}
    for name, text in texts.items():
        for fn in (parse_calls, parse_action, extract_call_text, parse_awareness, lambda t: normalize_calls(t)):
            def go(fn=fn, text=text):
                try:
                    fn(text)
                except (CallParseError, AwarenessParseError):
                    pass
                return True
            cases.append((f"{name}: {getattr(fn, '__name__', 'normalize_calls')}", go, bool))
    _report("5 comparison and parsing", H.run_class(cases, deadline_s=3.0))


# -- 6. secrets: see test_secrets.py for the end-to-end run; here the hostile combinations ------------

def test_no_run_parameter_redirects_a_key(monkeypatch):
    from tasks.runtime import KeyNotAllowed, key_env

    monkeypatch.setenv("PROGRA_KEY_ENVS", "PROGRA_TEST_KEY@127.0.0.1:8000|llm.internal, secret:team-key@llm.internal:443")
    monkeypatch.setenv("PROGRA_TEST_KEY", "sk-test")
    hostile = [("PROGRA_TEST_KEY", None, "http://127.0.0.1:8001/v1"), ("PROGRA_TEST_KEY", None, "http://llm.internal.evil.com/v1"),
               ("PROGRA_TEST_KEY", None, "http://evil.com/?x=llm.internal"), ("PROGRA_TEST_KEY", None, "http://llm.internal@evil.com/"),
               ("PROGRA_TEST_KEY", None, "http://evil.com#llm.internal"), ("HOME", None, None), ("PATH", None, "http://127.0.0.1:8000"),
               ("AWS_SECRET_ACCESS_KEY", None, None), ("OPENAI_API_KEY", None, None), (None, "team-key", "http://llm.internal:444"),
               (None, "other-block", "http://llm.internal:443"), ("PROGRA_TEST_KEY", None, "file:///etc/passwd")]
    cases = [(f"{e or 'secret:' + s} -> {b}", lambda e=e, s=s, b=b: key_env(e, s, b), lambda v: isinstance(v, KeyNotAllowed))
             for e, s, b in hostile]
    cases.append(("the bound host works", lambda: key_env("PROGRA_TEST_KEY", None, "http://127.0.0.1:8000/v1"), lambda v: v == "PROGRA_TEST_KEY"))
    _report("6 secrets", H.run_class(cases, (KeyNotAllowed,)))


# -- 7. SQL is read-only --------------------------------------------------------------------------

@pytest.fixture()
def sql_root(tmp_path):
    import pyarrow as pa

    from storage import DatasetStore

    store = DatasetStore(str(tmp_path / "root"))
    good = store.write("segments", pa.table({"segment_id": ["s1", "s2"], "x": [1, 2]}), dataset_id="aaaaaaaaaaaa", config={})
    bad = store.write("segments", pa.table({"segment_id": ["t1"], "x": [3]}), dataset_id="bbbbbbbbbbbb", config={})
    (Path(store.dataset_dir("segments", bad.dataset_id)) / "_manifest.json").write_text("{not json")
    return tmp_path / "root", good


def _parts(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))}


def test_user_sql_reads_committed_data_and_nothing_else(sql_root, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app
    from storage import Catalog, CorruptManifest, DatasetStore, SQLRefused

    root, good = sql_root
    part = next(p for p in root.rglob("part-*.parquet") if good.dataset_id in str(p))
    before = _parts(root)
    cat = Catalog(str(root))
    hostile = [f"COPY (SELECT 'evil' AS segment_id, 9 AS x) TO '{part}' (FORMAT parquet)", f"ATTACH '{tmp_path}/x.db' AS x",
               "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_text('/etc/hostname')", "SELECT * FROM glob('/etc/*')",
               "INSTALL httpfs", "LOAD httpfs", "SET enable_external_access = true", "CREATE TABLE t AS SELECT 1",
               "SELECT 1; COPY segments TO '/tmp/progra-out.csv'", "DROP VIEW segments", "PRAGMA enable_profiling",
               f"SELECT * FROM read_parquet('{tmp_path}/../../etc/*.parquet')", "CALL dbgen(sf=1)", "EXPORT DATABASE '/tmp/progra-db'",
               "SELECT * FROM duckdb_settings() WHERE name = 'x'; SET threads = 1", "UPDATE segments SET x = 0", "VACUUM"]
    cases = [(q[:60], lambda q=q: cat.user_sql(q), lambda v: isinstance(v, (SQLRefused, Exception)) and not hasattr(v, "num_rows"))
             for q in hostile]
    cases.append(("the committed parts are unchanged", lambda: _parts(root), lambda v: v == before))
    cases.append(("the view shows the committed rows", lambda: cat.user_sql("select segment_id from segments order by 1").column(0).to_pylist(),
                  lambda v: v == ["s1", "s2"]))
    runner = CliRunner()
    for where in ["1=1; COPY segments TO '/tmp/progra-x.csv'", "1=1 -- comment", "x > (SELECT count(*) FROM read_csv('/etc/passwd'))",
                  "1=1) UNION ALL (SELECT 'evil', 9"]:
        cases.append((f"export --where {where[:40]}", lambda where=where: runner.invoke(
            app, ["export", "segments", str(tmp_path / "o.parquet"), "--where", where, "--root", str(root)]),
            lambda r: r.exit_code != 0 and not (tmp_path / "o.parquet").exists()))
    cases.append(("a good --where works", lambda: runner.invoke(app, ["export", "segments", str(tmp_path / "k.parquet"), "--where", "x = 2",
                                                                   "--root", str(root)]), lambda r: r.exit_code == 0 and "1 rows" in r.output))
    cases.append(("progra sql refuses COPY", lambda: runner.invoke(app, ["sql", f"COPY segments TO '{tmp_path}/c.csv'", "--root", str(root)]),
                  lambda r: r.exit_code == 2 and not (tmp_path / "c.csv").exists()))
    store = DatasetStore(str(root))
    cases.append(("corrupt manifest: other datasets listed", lambda: [r.dataset_id for r in store.list()], lambda v: v == [good.dataset_id]))
    cases.append(("corrupt manifest named", lambda: store.ref("segments", "bbbbbbbbbbbb"),
                  lambda v: isinstance(v, CorruptManifest) and "segments/bbbbbbbbbbbb" in str(v)))
    _report("7 read-only SQL", H.run_class(cases, (SQLRefused, CorruptManifest, Exception)))


# -- 8. config input --------------------------------------------------------------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
                                                       for p, c in zip("abcdefgh", "bcdefghi", strict=True))


def test_config_input_is_bounded_typed_and_clear(tmp_path):
    from pydantic import ValidationError

    (tmp_path / "bomb.yaml").write_text(BOMB)
    (tmp_path / "big.yaml").write_text("storage:\n  root: '" + "x" * (2 << 20) + "'\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    cases = [("alias bomb in --config", lambda: load_config(path=tmp_path / "bomb.yaml"), lambda e: isinstance(e, ConfigInputError)),
             ("alias bomb in --set", lambda: load_config("embedded", overrides=[
                 "ingest.jsonl=[&a [x, x, x, x, x, x, x, x], &b [*a, *a, *a, *a, *a, *a], &c [*b, *b, *b, *b, *b, *b], [*c, *c, *c, *c]]"]),
              lambda e: isinstance(e, ConfigInputError)),
             ("alias in a flow-style --set", lambda: load_config("embedded", overrides=["ingest.jsonl=[&a x, *a, *a]"]),
              lambda e: isinstance(e, ConfigInputError)),
             ("a 2 MB config file", lambda: load_config(path=tmp_path / "big.yaml"), lambda e: isinstance(e, ConfigInputError)),
             ("a 100 kB --set value", lambda: load_config("embedded", overrides=["storage.root=" + "x" * 100_000]),
              lambda e: isinstance(e, ConfigInputError)),
             ("a config that is a list", lambda: load_config(path=tmp_path / "list.yaml"), lambda e: isinstance(e, ConfigInputError))]
    for profile in ["../configs/embedded", "/etc/passwd", "embedded/../paper", "..", "", "embedded.yaml", "EMBEDDED\x00", "x" * 500]:
        cases.append((f"profile {profile[:30]!r}", lambda p=profile: load_config(p) if p else ConfigInputError("empty profile is the default"),
                      lambda e: isinstance(e, ConfigInputError)))
    for o in ["llm.timeout_s=.inf", "llm.timeout_s=-.inf", "grpo.learning_rate=.nan", "ingest.held_out_percent=true",
              "ingest.held_out_percent=50.5", "models.policy=no", "models.policy=null", "llm.concurrency='8'", "evaluate.limit=yes",
              "grpo.temperature=1e999", "sft.max_steps=1e3", "ingest.jsonl=a.jsonl", "storage.root=7", "grpo.use_vllm=on"]:
        cases.append((o, lambda o=o: load_config("embedded", overrides=[o]), lambda e: isinstance(e, ValidationError)))
    for stage_kw in [{"profile": "../configs/paper"}, {"profile": "/tmp/x"}]:
        from progra_core.config import resolve_config
        cases.append((f"deployment profile {stage_kw['profile']}", lambda kw=stage_kw: resolve_config(None, kw["profile"], None),
                      lambda e: isinstance(e, ConfigInputError)))
    cases.append(("valid overrides still work", lambda: load_config("embedded", overrides=["evaluate.limit=3", "grpo.learning_rate=1"]),
                  lambda c: c.evaluate.limit == 3 and c.grpo.learning_rate == 1.0))
    _report("8 config input", H.run_class(cases, (ConfigInputError, ValidationError, ValueError, yaml.YAMLError), deadline_s=5))


# -- Hypothesis: no hang, no undocumented exception ---------------------------------------------------

FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
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
