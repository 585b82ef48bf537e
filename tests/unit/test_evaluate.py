"""BFCL multi-turn evaluation: the scorer agrees with bfcl-eval's checker, the inference loop runs
entries the way bfcl-eval does (miss_func withholding, step limit, message formats), and scripted
models score what they should, per entry and per turn."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest

from progra_core.calls import Call, format_call
from progra_core.config import EvaluateConfig
from progra_core.evaluation.bfcl import (
    Subject,
    bfcl_system_prompt,
    run_bfcl,
    select_test_entries,
)
from progra_core.evaluation.scoring import check_entry, ground_truth_calls
from progra_core.llm.gateway import ChatResult
from progra_core.prompts.policy import decode_calls
from progra_core.sources.bfcl import eval_entries, load_entries

# -- agreement with bfcl-eval's checker ----------------------------------------------------------

_names = itertools.count()


def _official(entry: dict, turns) -> bool:
    """bfcl-eval's own checker (it evals call text: only ever fed our formatted ground truth)."""
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker

    decoded = [[[format_call(c) for c in step] for step in turn if step] for turn in turns]
    category = entry["id"].rsplit("_", 1)[0]
    return multi_turn_checker(decoded, entry["ground_truth"], entry, category, f"progra_agree_{next(_names)}")["valid"]


def _corrupt(kind: str, gt: list[list[Call]]) -> list[list[list[Call]]]:
    """One systematic corruption of the ground truth, applied to its middle non-empty turn k."""
    turns = [[[c] for c in t] for t in gt]
    nonempty = [i for i, t in enumerate(gt) if t]
    if kind == "identity" or not nonempty:
        return turns
    if kind == "one_step":
        return [[t] if t else [] for t in gt]
    k = nonempty[len(nonempty) // 2]
    t = list(gt[k])
    if kind == "drop_last_call":
        t = t[:-1]
    elif kind == "drop_turn":
        t = []
    elif kind == "wrong_value":
        c = t[0]
        args = dict(c.args)
        key = next((a for a, v in args.items() if isinstance(v, str)), None)
        args = {**args, key: args[key] + "_x"} if key else {**args, "unexpected": 1}
        t[0] = Call(c.name, args, c.positional)
    elif kind == "unknown_function":
        t = t + [Call("no_such_function", {})]
    elif kind == "reverse":
        t = t[::-1]
    elif kind == "duplicate":
        t = t + [t[-1]]
    elif kind == "first_only":
        t = t[:1]
    elif kind == "shift_earlier" and k > 0:
        turns[k - 1] = turns[k - 1] + [[c] for c in t]
        t = []
    turns[k] = [[c] for c in t]
    return turns


CORRUPTIONS = ("identity", "one_step", "drop_last_call", "drop_turn", "wrong_value", "unknown_function", "reverse",
               "duplicate", "first_only", "shift_earlier")


@pytest.mark.parametrize("category", ["base", "miss_func", "miss_param", "long_context"])
def test_scorer_agrees_with_bfcl_eval_checker(category):
    entries = load_entries(category)
    verdicts: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for e in entries:
        gt = ground_truth_calls(e)
        for kind in CORRUPTIONS:
            turns = _corrupt(kind, gt)
            verdicts[kind].append((check_entry(e, turns).passed, _official(e, turns)))
    for kind, pairs in verdicts.items():
        disagree = sum(a != b for a, b in pairs)
        assert disagree == 0, f"{kind}: {disagree} of {len(pairs)} verdicts differ from bfcl-eval"
    assert all(a for a, _ in verdicts["identity"]) and len(verdicts["identity"]) == 200  # ground truth: 100 %
    assert not any(a for a, _ in verdicts["drop_last_call"])  # the corruptions do bite
    assert sum(not a for a, _ in verdicts["reverse"]) > 0 and sum(a for a, _ in verdicts["unknown_function"]) == 200


def test_per_turn_credit_and_first_failed_turn():
    e = next(e for e in load_entries("base") if sum(bool(t) for t in e["ground_truth"]) >= 3)
    gt = ground_truth_calls(e)
    turns = [[[c] for c in t] for t in gt]
    k = len(gt) - 1
    turns[k] = turns[k][:-1]
    s = check_entry(e, turns)
    assert not s.passed and s.first_failed_turn == k and s.turn_passed == [True] * k + [False]
    assert s.error_type in ("multi_turn:instance_state_mismatch", "multi_turn:execution_response_mismatch",
                            "multi_turn:empty_turn_model_response")
    stopped = check_entry(e, turns[:2], ended="force_terminated", ended_detail="too many steps")
    assert stopped.turn_passed == [True, False] + [False] * (len(gt) - 2)
    assert stopped.error_type == "multi_turn:force_terminated" and not stopped.passed


# -- the inference loop ------------------------------------------------------------------------


class Scripted:
    """A 'model' that plays a script per run: a list of outputs per turn. A turn's outputs are
    sent in order; when they run out it says it is done (ending the turn). Records requests."""

    def __init__(self, scripts: dict[str, list[list[str]]]):
        self.scripts = scripts
        self.requests = []
        self._pos: dict[str, list[int]] = {}

    def batch(self, reqs):
        out = []
        for r in reqs:
            self.requests.append(r)
            entry_id = r.id.split("#")[0]
            turn = sum(m["role"] == "user" and not m["content"].startswith("[{'role': 'tool'") for m in r.messages) - 1
            pos = self._pos.setdefault(r.id, [turn, 0])
            if pos[0] != turn:
                pos[:] = [turn, 0]
            outputs = self.scripts[entry_id][turn]
            text = outputs[pos[1]] if pos[1] < len(outputs) else "I have completed the request."
            pos[1] += 1
            out.append(ChatResult(text=text, model=r.model, role=r.role, id=r.id, prompt_tokens=10, completion_tokens=5,
                                  latency_ms=1.0))
        return out


def _replay(entry: dict, drop_last_of: int | None = None) -> list[list[str]]:
    script = []
    for t, turn in enumerate(entry["ground_truth"]):
        calls = list(turn[:-1] if t == drop_last_of else turn)
        script.append([f"[{c}]" for c in calls] or ["I need more information to do that."])
    return script


LOCAL = Subject("scripted", "scripted", "local/scripted")


def _run(*args, **kw):
    table, rejects = run_bfcl(*args, **kw)
    assert rejects == []
    return table


def _cfg(**kw) -> EvaluateConfig:
    return EvaluateConfig(**{"trials": 1, "temperature": 0.0, "max_tokens": 64, **kw})


@pytest.mark.parametrize("category", ["base", "miss_func", "miss_param"])
def test_ground_truth_replay_scores_100(category):
    entries = eval_entries(category)[:6]
    table = _run(entries, Scripted({e["id"]: _replay(e) for e in entries}), LOCAL, _cfg(trials=2))
    rows = table.to_pylist()
    assert len(rows) == 12 and all(r["passed"] for r in rows), [r["error"] for r in rows if not r["passed"]]
    assert all(all(x is not False for x in r["turn_passed"]) and r["turns_played"] == r["n_turns"] for r in rows)
    unchecked = [x is None for r in rows for x in r["turn_passed"]]
    assert any(unchecked) == (category != "base")  # the ask-the-user / no-function-yet turns
    assert {r["trial"] for r in rows} == {0, 1}


def test_dropping_last_call_fails_entry_but_keeps_earlier_turns():
    e = next(e for e in eval_entries("base") if len(e["ground_truth"]) >= 3 and all(e["ground_truth"]))
    k = len(e["ground_truth"]) - 1
    row = _run([e], Scripted({e["id"]: _replay(e, drop_last_of=k)}), LOCAL, _cfg()).to_pylist()[0]
    assert row["passed"] is False and row["first_failed_turn"] == k
    assert row["turn_passed"] == [True] * k + [False]


def test_miss_func_withholds_functions_until_their_turn():
    e = next(e for e in eval_entries("miss_func") if e["missed_function"])
    (turn, docs), = e["missed_function"].items()
    names = [d["name"] for d in docs]
    gw = Scripted({e["id"]: _replay(e)})
    row = _run([e], gw, LOCAL, _cfg()).to_pylist()[0]
    assert row["passed"]
    first = gw.requests[0].messages
    assert first[0]["role"] == "system" and all(f'"name": "{n}"' not in first[0]["content"] for n in names)
    at_turn = [r for r in gw.requests if any("I have updated some more functions" in m["content"] for m in r.messages)]
    added = next(m for m in at_turn[0].messages if "I have updated some more functions" in m["content"])
    assert all(f"'name': '{n}'" in added["content"] for n in names)  # BFCL formats the docs list as Python
    before = [r for r in gw.requests if r not in at_turn]
    assert before and all(f'"name": "{n}"' not in m["content"] and f"'name': '{n}'" not in m["content"]
                          for r in before for m in r.messages for n in names)
    assert int(turn) == sum(m["role"] == "user" and "tool" not in m["content"][:20] for m in at_turn[0].messages) - 1


def test_step_limit_force_quits_and_errors_end_the_entry():
    e = eval_entries("base")[0]
    looping = Scripted({e["id"]: [["[pwd()]"] * 50 for _ in e["question"]]})
    row = _run([e], looping, LOCAL, _cfg(max_steps_per_turn=3)).to_pylist()[0]
    assert row["error_type"] == "multi_turn:force_terminated" and row["n_steps"] == 4 and not row["passed"]
    assert row["turns_played"] == 1 and row["turn_passed"] == [False] * len(e["question"])

    class Broken:
        def batch(self, reqs):
            return [ChatResult(None, r.model, r.role, r.id, error="context overflow: 9000 > 8192") for r in reqs]

    row = _run([e], Broken(), LOCAL, _cfg()).to_pylist()[0]
    assert row["error_type"] == "multi_turn:inference_error" and "context overflow" in row["error"]


def test_observations_go_back_as_bfcl_does_for_local_and_endpoint_models():
    e = eval_entries("base")[0]
    script = {e["id"]: _replay(e)}
    local = Scripted(script)
    _run([e], local, LOCAL, _cfg())
    assert any(m["role"] == "tool" and m["name"] for r in local.requests for m in r.messages)
    remote = Scripted(script)
    _run([e], remote, Subject("gpt", "base", "openai/gpt-4o"), _cfg())
    assert not any(m["role"] == "tool" for r in remote.requests for m in r.messages)
    assert any(m["content"].startswith("[{'role': 'tool', 'name': ") for r in remote.requests for m in r.messages)


def test_system_prompt_is_bfcl_default_and_cot_adds_thinking():
    e = eval_entries("base")[0]
    prompt = bfcl_system_prompt(e["function"])
    assert "[func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]" in prompt
    assert '"name": "' + e["function"][0]["name"] + '"' in prompt and "Python 3 syntax" in prompt
    gw = Scripted({e["id"]: _replay(e)})
    _run([e], gw, Subject("base", "reasoning", "local/x", cot=True), _cfg())
    assert gw.requests[0].messages[0]["content"].startswith(prompt) and "<think>" in gw.requests[0].messages[0]["content"]


def test_decode_response():
    assert decode_calls("[cd(folder='a'), ls()]")[0] == [Call("cd", {"folder": "a"}), Call("ls", {})]
    assert decode_calls("cd(folder='a')")[0] == [Call("cd", {"folder": "a"})]
    assert decode_calls("<think>go to a</think>\n[cd(folder='a')]")[0] == [Call("cd", {"folder": "a"})]
    assert decode_calls("<summary>s</summary><think>t</think><answer>[ls(a=True)]</answer>")[0] == [Call("ls", {"a": True})]
    assert decode_calls("```python\n[pwd()]\n```")[0] == [Call("pwd", {})]
    for prose in ("Sure, I will list the files.", "", "<answer>I need more information.</answer>", "[]",
                  "[__import__('os').system('x')]", "[open('f').read()]"):
        calls, err = decode_calls(prose)
        assert calls is None


def test_select_held_out_slice():
    cfg = _cfg(limit=2, select="shortest", categories=["base", "miss_param"])
    entries = select_test_entries(cfg)
    assert [e["category"] for e in entries] == ["base", "base", "miss_param", "miss_param"]
    from progra_core.sources.bfcl import split_of

    assert all(split_of(e["id"]) == "held_out" for e in entries)


def test_tiny_model_smoke(tiny_llama):
    from progra_core.llm import Gateway

    gw = Gateway(None, local_models={"tiny": str(tiny_llama)}, local_batch_size=4)
    entries = select_test_entries(_cfg(limit=1, select="shortest"))
    rows = _run(entries, gw, Subject("tiny", "base", "local/tiny"), _cfg(max_tokens=8, max_steps_per_turn=2)).to_pylist()
    assert [r["category"] for r in rows] == ["base", "miss_func", "miss_param"]
    for r in rows:
        assert r["n_steps"] >= 1 and r["completion_tokens"] > 0 and r["prompt_tokens"] > 1000
        assert len(r["turn_passed"]) == r["n_turns"] and r["passed"] is False  # random weights solve nothing
        assert all(s["text"] is not None for s in r["steps"])


def test_unbuildable_entry_is_a_reject_not_a_crash():
    good = eval_entries("base")[0]
    bad = {**good, "id": "multi_turn_base_9999", "involved_classes": ["NoSuchAPI"]}
    table, rejects = run_bfcl([bad, good], Scripted({good["id"]: _replay(good)}), LOCAL, _cfg())
    assert table.num_rows == 1 and table.column("passed").to_pylist() == [True]
    assert [(r["input_id"], r["reason"]) for r in rejects] == [("multi_turn_base_9999", "env_error")]


def test_eval_summary_view_and_table1(tmp_path):
    """Table 1 from SQL: accuracy pooled over trials, Overall = mean of the three categories,
    per-turn accuracy over checked turns only (null turns are not BFCL-checked)."""
    import pyarrow as pa

    from progra_core.evaluation import report
    from progra_core.evaluation.bfcl import EVAL_RESULTS
    from storage import Catalog, DatasetStore

    def row(cat, entry, trial, passed, turns):
        return {"model_ref": "m", "method": "progra", "model": "local/m", "prompt": "bfcl", "benchmark": "bfcl",
                "category": cat, "entry_id": entry, "trial": trial, "passed": passed, "turn_passed": turns,
                "turn_errors": [None] * len(turns), "n_turns": len(turns), "steps": []}

    rows = [row("base", "b1", 0, True, [True, True]), row("base", "b1", 1, False, [True, False]),
            row("miss_func", "f1", 0, False, [False, None]), row("miss_param", "p1", 0, True, [True, None, True])]
    store = DatasetStore(tmp_path)
    ref = store.write("eval_results", pa.Table.from_pylist(rows, schema=EVAL_RESULTS), dataset_id="e1")
    summary = {r["category"]: r for r in Catalog(tmp_path).sql(f"select * from eval_summary where eval_id = '{ref.dataset_id}'").to_pylist()}
    assert summary["base"]["accuracy"] == 50.0 and summary["base"]["trials"] == 2 and summary["base"]["turn_accuracy"] == 75.0
    assert summary["miss_func"]["turn_accuracy"] == 0.0 and summary["miss_func"]["checked_turns"] == 1
    assert summary["miss_param"]["turn_accuracy"] == 100.0
    headers, body = report.table1(list(summary.values()))
    assert headers[:6] == ["Model", "Method", "Overall", "Base", "Miss F.", "Miss P."]
    assert body == [["m", "progra", "50.00", "50.00", "0.00", "100.00", f"{(75 + 0 + 100) / 3:.2f}", "4"]]
    h, b = report.compare([("a", list(summary.values())), ("b", [{**s, "accuracy": 100.0} for s in summary.values()])])
    assert h[2:4] == ["Overall [a]", "Overall [b]"] and b[0][2:4] == ["50.00", "100.00"] and b[0][-1] == "+50.00"
    assert "| m | progra | 50.00 |" in report.to_markdown(headers, body)
    assert report.table_title(list(summary.values())) == "Accuracy (%): BFCL multi-turn"  # no τ² ran: not in the title
    # the base's run and the trained model's share no model: one row per run, not a table of "–"
    trained = [{**s, "model_ref": "0123456789abcdef", "accuracy": 100.0} for s in summary.values()]
    h, b = report.compare([("a", list(summary.values())), ("b", trained)])
    assert h[0] == "Run / model" and [r[0] for r in b] == ["a\nm", "b\n01234567"] and b[1][2] == "100.00"
    assert all(v != "–" for r in b for v in r[2:6])


def test_tables_stay_whole_in_80_columns():
    """Ids and numbers never break in an 80-column terminal or log (a model id folded over four
    lines, "Metho/d", "81.2/5" before)."""
    import io

    from rich.console import Console

    import flows.console as fc
    from progra_core.evaluation import report

    summary = [{"model_ref": ref, "method": m, "category": c, "accuracy": 12.5, "turn_accuracy": 1.54, "runs": 20,
                "valid_rate": 81.25, "function_rate": 21.88}
               for ref, m in (("base", "base"), ("42b8f0ca0fb4ca0f", "progra"), ("853162d701609c32", "progra_tarl"))
               for c in ("base", "call", "end")]
    buf = io.StringIO()
    old, fc.console = fc.console, Console(file=buf, width=80)
    try:
        fc.print_rows(*report.table1(summary), report.table_title(summary))
    finally:
        fc.console = old
    lines = buf.getvalue().splitlines()
    assert max(map(len, lines)) <= 80
    for token in ("42b8f0ca", "853162d7", "progra_tarl", "81.25", "12.50", "Method", "Overall"):
        assert any(token in line for line in lines), (token, buf.getvalue())


def test_a_held_out_evaluation_refuses_scenarios_the_model_trained_on(tmp_path):
    """The split is checked on the model's lineage: a trajectory of scenario 7 (any category) in
    the data behind the adapter makes every variant of scenario 7 a leak, in BFCL entries and in
    next-call cases; a clean lineage passes."""
    import pyarrow as pa

    from progra_core.config import load_config
    from progra_core.evaluation.bfcl import Subject
    from progra_core.evaluation.harness import leaked_runs
    from progra_core.schemas import DATASETS
    from storage import DatasetStore
    from tasks.evaluate import check_no_leak, trained_bfcl_ids

    def table(stage, rows):
        schema = DATASETS[stage]
        return pa.Table.from_pylist([{**{f.name: None for f in schema}, **r} for r in rows], schema=schema)

    store = DatasetStore(tmp_path)
    clean = store.write("trajectories", table("trajectories", [{"trajectory_id": "bfcl:multi_turn_base_2", "source": "bfcl",
                                                                "source_id": "multi_turn_base_2"}]), dataset_id="t-clean")
    dirty = store.write("trajectories", table("trajectories", [{"trajectory_id": "bfcl:multi_turn_base_7", "source": "bfcl",
                                                                "source_id": "multi_turn_base_7"},
                                                               {"trajectory_id": "x", "source": "jsonl", "source_id": "r1"}]),
                        dataset_id="t-dirty")
    for name, parent in (("m-clean", clean), ("m-dirty", dirty)):
        store.write("models", table("models", [{"model_id": name}]), dataset_id=name, parents=[parent.dataset_id])
    assert trained_bfcl_ids(store, ["m-dirty"]) == {"multi_turn_base_7"}

    entries = [{"id": "multi_turn_miss_func_7"}, {"id": "multi_turn_base_70"}, {"id": "multi_turn_long_context_17"}]
    cases = [{"case_id": "bfcl:multi_turn_base_7#t0s1"}, {"case_id": "end:bfcl:multi_turn_base_7#t1"},
             {"case_id": "bfcl:multi_turn_base_77#t0s0"}, {"case_id": "airline:3"}]
    assert leaked_runs(entries, cases, {"multi_turn_base_7"}) == [
        "multi_turn_miss_func_7", "bfcl:multi_turn_base_7#t0s1", "end:bfcl:multi_turn_base_7#t1"]

    cfg = load_config("embedded")
    subject = Subject("m-dirty", "progra", "local/m-dirty")
    with pytest.raises(ValueError, match=r"3 held-out runs share a BFCL scenario .* multi_turn_miss_func_7"):
        check_no_leak(cfg, store, subject, ["m-dirty"], entries, cases)
    check_no_leak(cfg, store, subject, ["m-clean"], entries, cases)  # no shared scenario
    check_no_leak(cfg, store, Subject("base", "base", "local/smollm2"), [], entries, cases)  # the base model trained on nothing
    check_no_leak(load_config("embedded", overrides=["evaluate.split=train"]), store, subject, ["m-dirty"], entries, cases)

    # your env's held-out trajectories: the same conversation (env and requests) trained is a leak
    mine = store.write("trajectories", table("trajectories", [{"trajectory_id": "jsonl:a", "source": "jsonl", "env": "nb",
                                                               "turns": [{"query": "Add a note.", "actions": []},
                                                                         {"query": "Read it.", "actions": []}]}]),
                       dataset_id="t-mine")
    store.write("models", table("models", [{"model_id": "m-mine"}]), dataset_id="m-mine", parents=[mine.dataset_id])
    played = [{"id": "held_out:a", "env": "nb", "question": [[{"role": "user", "content": "Add a note."}],
                                                            [{"role": "user", "content": "Read it."}]]},
              {"id": "held_out:b", "env": "nb", "question": [[{"role": "user", "content": "Add a note."}]]}]
    held = load_config("embedded", overrides=["evaluate.held_out=[t.jsonl]"])
    with pytest.raises(ValueError, match=r"1 held-out runs share a BFCL scenario or a conversation .* held_out:a"):
        check_no_leak(held, store, Subject("m-mine", "progra", "local/m-mine"), ["m-mine"], played, [])
    check_no_leak(held, store, subject, ["m-clean"], played, [])


def test_a_pag_policy_under_its_training_prompt_sees_the_awareness_layout():
    """``evaluate.prompt: policy`` with an awareness subject: each request is info_meta, the policy's
    own latest summary with the current request, and this turn's steps (as in SFT and PAG-RL),
    never the raw earlier turns; the same replay still scores 100."""
    entries = eval_entries("base")[:3]

    class InOrder:
        def __init__(self):
            self.requests, self.pos = [], {}

        def batch(self, reqs):
            out = []
            for r in reqs:
                self.requests.append(r)
                e = next(x for x in entries if x["id"] == r.id.split("#")[0])
                script = [s for t, turn in enumerate(e["ground_truth"]) for s in (
                    f"<summary>turn {t} start</summary><think>go</think><answer>[{', '.join(turn)}]</answer>",
                    f"<summary>turn {t} done</summary><think>done</think><answer>Done.</answer>")]
                k = self.pos.get(r.id, 0)
                self.pos[r.id] = k + 1
                assert r.stop == ["</answer>"]  # a server stops there and drops the stop string
                out.append(ChatResult(text=script[k].removesuffix("</answer>"), model=r.model, role=r.role, id=r.id,
                                      finish_reason="stop"))
            return out

    gw = InOrder()
    rows = _run(entries, gw, Subject("m", "progra", "local/m", awareness=True), _cfg(prompt="policy")).to_pylist()
    assert all(r["passed"] for r in rows), [r["error"] for r in rows]
    for r in gw.requests:
        assert r.messages[0]["role"] == "system" and "<summary>" in r.messages[0]["content"]
        assert r.messages[1]["role"] == "user" and sum(m["role"] == "user" for m in r.messages) == 1
        k = gw.requests.index(r)
        steps = [x for x in gw.requests[:k] if x.id == r.id]
        if len(steps) % 2 == 1:  # a turn's second step shows the first as SFT does: the answer closed again
            assert r.messages[2]["role"] == "assistant" and r.messages[2]["content"].endswith("]</answer>")
        if len(steps) >= 2 and len(steps) % 2 == 0:  # a turn's first request after the previous turn's end
            t = len(steps) // 2
            assert r.messages[1]["content"].startswith(f"Progress so far (your own summary):\nturn {t - 1} done")
            assert len(r.messages) == 2


def test_budget_forcing_continues_a_note_cut_for_length_in_bfcl_too():
    """BFCL plays the same forcing as next-call: each step whose note ran out is continued once
    from the closed note, and the continued text (note + answer) is what the entry keeps."""
    e = eval_entries("base")[0]
    first = e["ground_truth"][0][0]

    class Looping:
        def __init__(self):
            self.requests = []

        def batch(self, reqs):
            self.requests += reqs
            return [ChatResult("<summary>Plan: call " + "x=1, " * 40, r.model, r.role, r.id, finish_reason="length")
                    if r.prefix is None else
                    ChatResult(r.prefix + f"[{first}]", r.model, r.role, r.id, finish_reason="stop") for r in reqs]

    gw = Looping()
    row = _run([e], gw, LOCAL, _cfg(forced_answer_tokens=32, max_steps_per_turn=1)).to_pylist()[0]
    forced = [r for r in gw.requests if r.prefix is not None]
    assert forced and all(r.max_tokens == 32 and r.prefix.endswith("</summary>\n<answer>") for r in forced)
    assert row["steps"][0]["calls"] == [first] and "</summary>\n<answer>" in row["steps"][0]["text"]
    gw = Looping()
    row = _run([e], gw, LOCAL, _cfg(max_steps_per_turn=1)).to_pylist()[0]  # off
    assert not any(r.prefix for r in gw.requests) and row["steps"][0]["calls"] == []
