"""Hostile input, classes 1-4 of the issue: runaway env calls, process-wide state, one bad
record, nothing silently changed; each over our own corpus (tests/reliability/hostile.py), its
tally asserted by ``H.report`` (classes 5-8: test_hostile_boundaries.py; fuzzing: test_fuzz.py)."""

from __future__ import annotations

import decimal
import json
import re
import threading
from pathlib import Path

from progra_core.calls import Call
from progra_core.envs import budget
from progra_core.envs.bfcl import BFCLEnv
from progra_core.sources import chat
from tests.reliability import hostile as H


def _budget_error(obs) -> bool:
    return isinstance(obs, list) and len(obs) == 1 and budget.budget_error(obs[0])


# -- 1. every env call within one budget ----------------------------------------------------------

def test_runaway_env_calls_become_error_observations_and_ingest_rejects(monkeypatch):
    monkeypatch.setattr(budget, "CALL_SECONDS", 0.3)
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
    H.report("1 env call budget", H.run_class(cases, (chat.RecordError,), deadline_s=15))


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
    H.report("2 process-wide state", H.run_class(cases))


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
    H.report("3 one bad record", H.run_class(cases))


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
    H.report("4 nothing silently changed", H.run_class(cases, (chat.RecordError,)))
