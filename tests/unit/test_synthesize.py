"""Synthesis (Appendix B): the vote, the two verification tiers, config validation, and whole
attempts driven through the real gateway and LiteLLM with scripted ``mock_response`` answers."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace

import pytest

from progra_core.config import SegmentConfig, SynthesizeConfig
from progra_core.data import synthesize as syn
from progra_core.envs.bfcl import BFCLEnv
from progra_core.llm import EndpointUnavailable, Gateway
from progra_core.schemas import TRAJECTORIES

FS = ["GorillaFileSystem"]
CONFIG = {"GorillaFileSystem": {"root": {"kim": {"type": "directory", "contents": {
    "notes.txt": {"type": "file", "content": "Buy milk and call the plumber."},
    "old": {"type": "directory", "contents": {}}}}}}}
EXEMPLAR = {"GorillaFileSystem": {"root": {"alex": {"type": "directory", "contents": {
    "a.txt": {"type": "file", "content": "Hello there."}}}}}}


# -- the vote ----------------------------------------------------------------------------------

def test_vote_accepts_a_majority_regardless_of_argument_order_and_spacing():
    v = syn.vote(["[mv(source='a', destination='b')]", "[mv(destination='b',  source='a')]", "[ls()]"], threshold=0.5)
    assert v.calls is not None and v.calls[0].name == "mv" and v.parsed == 3 and v.groups == 2
    assert v.top_share == pytest.approx(2 / 3)


def test_vote_below_threshold_or_tied_has_no_consensus():
    five = ["[ls()]", "[ls()]", "[pwd()]", "[cd(folder='x')]", "[mkdir(dir_name='y')]"]
    assert syn.vote(five, threshold=0.5).calls is None  # 2/5 < 0.5
    assert syn.vote(five, threshold=0.4).calls is not None  # 2/5 >= 0.4 and the only largest group
    tie = ["[ls()]", "[ls()]", "[pwd()]", "[pwd()]"]
    v = syn.vote(tie, threshold=0.5)
    assert v.calls is None and v.top_share == 0.5  # two groups of 2: ambiguous


def test_unparsable_candidates_count_in_k_but_vote_for_nothing():
    cands = ["[ls()]", "ls(", None, "[]", "I would call ls"]
    v = syn.vote(cands, threshold=0.5)
    assert v.parsed == 1 and v.calls is None and v.top_share == 0.2
    assert syn.vote(["[ls()]", "[ls()]", "garbage"], threshold=0.5).calls is not None  # 2/3


def test_vote_binds_positional_arguments_before_grouping():
    env = BFCLEnv(CONFIG, FS)
    v = syn.vote(["[cd('old')]", "[cd(folder='old')]", "[pwd()]"], threshold=0.6, resolve=env.resolve)
    assert v.calls is not None and v.calls[0].args == {"folder": "old"} and v.groups == 2


# -- verification tiers -----------------------------------------------------------------------

def test_state_change_detection_on_a_real_environment():
    env = BFCLEnv(CONFIG, FS)
    before = env.snapshot()
    obs = env.execute("[cd(folder='old'), ls()]")  # the root's only folder (kim) is the starting directory
    assert not syn.state_changed(before, env.snapshot())  # the cwd is private state: read-only for BFCL too
    assert not any(syn.is_error_observation(o) for o in obs)
    before = env.snapshot()
    env.execute("[mkdir(dir_name='reports')]")
    assert syn.state_changed(before, env.snapshot())
    before = env.snapshot()
    obs = env.execute("[cd(folder='missing')]")
    assert syn.is_error_observation(obs[0]) and not syn.state_changed(before, env.snapshot())
    assert syn.is_error_observation(env.execute("[no_such_function()]")[0])
    assert not syn.is_error_observation('{"current_working_directory": "kim"}')


def test_reviewer_majority_needs_more_than_half_of_all_reviewers():
    assert syn.review_majority(["yes", "Yes.", "no"]) == (2, 1, True)
    assert syn.review_majority(["yes", "No, it moved the wrong file", "maybe", None, "Answer: yes"]) == (2, 1, False)
    assert syn.review_majority(["Answer: yes", "YES", "yes", "no", "no"]) == (3, 2, True)
    assert syn.review_verdict("I cannot tell") is None and syn.review_verdict("Answer: no") is False


# -- config validation -------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "code"), [
    ("", "empty"),
    ('{"GorillaFileSystem": {"root": {"kim": ', "invalid_json"),
    ("[1, 2]", "not_object"),
    ('{"GorillaFileSystem": {"root": {}}, "Spaceship": {}}', "unknown_class"),
    ('{"GorillaFileSystem": {}}', "missing_class"),
    ('{"GorillaFileSystem": {"root": 5}}', "class_rejected"),
    ('{"GorillaFileSystem": {"root": {"a": {"type": "file"}}}}', "class_rejected"),
    ('{"GorillaFileSystem": {"rooot": {"a": {"type": "directory", "contents": {}}}}}', "default_state"),
    (json.dumps(EXEMPLAR), "copied_exemplar"),
])
def test_broken_configs_are_refused_with_a_reason_the_generator_can_act_on(text, code):
    config, err = syn.validate_config(text, FS, [EXEMPLAR])
    assert config is None and err.split(":")[0] == code


def test_a_valid_config_in_a_code_fence_with_chatter_passes():
    config, err = syn.validate_config("Sure! Here it is:\n```json\n" + json.dumps(CONFIG) + "\n```\nEnjoy.", FS, [EXEMPLAR])
    assert err is None and config == CONFIG
    assert syn.extract_json('x {"a": "}{"} y') == '{"a": "}{"}'


def test_plan_is_deterministic_and_seeds_only_from_the_given_entries():
    entries = [{"id": f"e{i}", "involved_classes": cls, "initial_config": {c: {"k": i} for c in cls}}
               for i, cls in enumerate([FS, FS, ["TwitterAPI", "GorillaFileSystem"], ["MathAPI"]])]
    cfg = SynthesizeConfig(attempts=5, involved_classes=[FS], exemplars=2, seed=3)
    a, b = syn.plan_attempts(cfg, entries), syn.plan_attempts(cfg, entries)
    assert a == b and len(a) == 5 and len({s["attempt_id"] for s in a}) == 5
    assert all(set(s["exemplar_ids"]) <= {"e0", "e1"} for s in a)  # exactly these classes first
    assert syn.plan_attempts(cfg.model_copy(update={"seed": 4}), entries)[0]["seed"] != a[0]["seed"]
    solo = syn.plan_attempts(SynthesizeConfig(attempts=1, involved_classes=[["TwitterAPI"]], exemplars=1), entries)[0]
    assert solo["exemplar_ids"] == ["e2"] and solo["exemplars"] == [{"TwitterAPI": {"k": 2}}]  # restricted to the class
    with pytest.raises(ValueError, match="unknown"):
        SynthesizeConfig(involved_classes=[["Spaceship"]])


# -- whole attempts through the real gateway (LiteLLM mock_response) ---------------------------

class ScriptedLiteLLM(Gateway):
    """The real Gateway and LiteLLM; each request's answer comes from a per-(attempt, role) queue
    via LiteLLM's ``mock_response``. Records every request it passes on."""

    def __init__(self, script: dict[tuple[str, str], list[str]]):
        super().__init__(None, concurrency=4, max_retries=0)
        self.script = {k: list(v) for k, v in script.items()}
        self.asked: dict[tuple[str, str], list] = defaultdict(list)

    def batch(self, requests, on_result=None):
        out = []
        for r in requests:
            self.asked[(r.id, r.role)].append(r)
            out.append(replace(r, extra={**r.extra, "mock_response": self.script[(r.id, r.role)].pop(0)}))
        return super().batch(out, on_result)


def _spec(n: int) -> dict:
    return {"attempt_id": f"t-{n}", "seed": n, "involved_classes": FS, "exemplar_ids": ["x"], "exemplars": [EXEMPLAR]}


MODELS = {"generator": "openai/gen", "action": "openai/act", "reviewer": "openai/rev"}


def test_attempts_stop_at_the_first_failed_turn_and_keep_a_long_enough_prefix():
    cfg = SynthesizeConfig(turns=3, min_turns=2, candidates=3, reviewers=3, vote_threshold=0.5, max_iterations=3)
    script = {
        # t-0: config ok; turn 0 changes state; turn 1 is read-only, reviewers 2:1 yes; turn 2 has no consensus
        ("t-0", "generator"): [json.dumps(CONFIG), "Create a folder named reports inside kim.",
                               "Query: List what is in the current folder now.", "Rename notes.txt to todo.txt."],
        ("t-0", "action"): ["[mkdir(dir_name='reports'), cd(folder='reports')]", "[mkdir(dir_name='reports'),cd(folder='reports')]",
                            "[ls()]", "[ls()]", "[ls()]", "[ls(a=True)]",
                            "[mv(source='notes.txt', destination='todo.txt')]", "[ls()]", "not a call"],
        ("t-0", "reviewer"): ["yes", "Yes, it lists the folder.", "no"],
        # t-1: invalid JSON, then a copy of the exemplar, then ok; turn 0 read-only and reviewers say no
        ("t-1", "generator"): ['{"GorillaFileSystem": {"root": ', json.dumps(EXEMPLAR), json.dumps(CONFIG),
                               "Where am I?"],
        ("t-1", "action"): ["[pwd()]"] * 3,
        ("t-1", "reviewer"): ["no", "no", "yes"],
        # t-2: the agreed call fails in the env
        ("t-2", "generator"): [json.dumps(CONFIG), "Go into the folder called missing."],
        ("t-2", "action"): ["[cd(folder='missing')]"] * 3,
    }
    gw = ScriptedLiteLLM(script)
    table = syn.synthesize_wave([_spec(0), _spec(1), _spec(2)], gw, cfg, MODELS)
    assert all(not q for q in gw.script.values())  # every scripted answer was asked for
    rows = {r["attempt_id"]: r for r in table.to_pylist()}

    a = rows["t-0"]
    assert (a["stop_reason"], a["stop_turn"], a["turns_verified"], a["accepted"]) == ("no_consensus", 2, 2, True)
    assert [t["outcome"] for t in a["turns"]] == ["ok", "ok", "no_consensus"]
    assert a["turns"][0]["state_changed"] is True and a["turns"][1]["state_changed"] is False
    assert (a["turns"][1]["review_yes"], a["turns"][1]["review_no"]) == (2, 1)
    assert a["turns"][2]["parsed"] == 2 and a["turns"][2]["groups"] == 2
    assert a["llm_calls"] == 1 + 3 + 3 * 3 + 3  # config + queries + K per turn + R once
    traj = a["trajectory"]
    assert traj["source"] == "synth" and traj["n_turns"] == 2 and traj["n_calls"] == 3
    assert traj["turns"][1]["query"] == "List what is in the current folder now."  # label stripped
    assert [c["name"] for act in traj["turns"][0]["actions"] for c in act["calls"]] == ["mkdir", "cd"]
    assert all(len(act["observations"]) == 1 for t in traj["turns"] for act in t["actions"])  # per_call steps

    b = rows["t-1"]
    assert b["config_iterations"] == 3 and [e.split(":")[0] for e in b["config_errors"]] == ["invalid_json", "copied_exemplar"]
    retry = gw.asked[("t-1", "generator")][1].messages
    assert retry[-1]["role"] == "user" and "invalid_json" in retry[-1]["content"] and retry[-2]["role"] == "assistant"
    assert (b["stop_reason"], b["turns_verified"], b["accepted"], b["trajectory"]) == ("review_rejected", 0, False, None)

    c = rows["t-2"]
    assert (c["stop_reason"], c["stop_turn"], c["accepted"]) == ("execution_error", 0, False)
    assert ("t-2", "reviewer") not in gw.asked  # a failing call never reaches the reviewers

    # K candidates and R reviewers are distinct samples (separate cache entries, sampled temperature)
    acts = gw.asked[("t-0", "action")][:3]
    assert [r.sample for r in acts] == [0, 1, 2] and len({r.cache_key() for r in acts}) == 3
    assert all(r.temperature == cfg.action_temperature for r in acts)

    trajs, attempts, rejects, stats = syn.split_outcomes(table)
    assert trajs.schema == TRAJECTORIES and trajs.num_rows == 1 and attempts.num_rows == 3
    assert sorted(r["reason"] for r in rejects) == ["execution_error", "review_rejected"]
    assert stats["attempts"] == trajs.num_rows + len(rejects)
    assert stats["turns"]["0"] == {"reached": 3, "query_ok": 3, "consensus": 3, "verified": 1}

    # the row feeds segment unchanged: one segment per call, nothing rejected
    from progra_core.data import segment as seg

    segments, seg_rejects, _ = seg.segment(trajs, SegmentConfig())
    assert segments.num_rows == 3 and seg_rejects == []


def test_config_retries_are_bounded_and_a_repeated_query_stops_the_attempt():
    cfg = SynthesizeConfig(turns=3, min_turns=1, candidates=1, reviewers=1, max_iterations=2)
    script = {
        ("t-0", "generator"): ["nope", "{}"],
        ("t-1", "generator"): [json.dumps(CONFIG), "Make a folder reports.", "make a folder reports."],
        ("t-1", "action"): ["[mkdir(dir_name='reports')]"],
    }
    table = syn.synthesize_wave([_spec(0), _spec(1)], ScriptedLiteLLM(script), cfg, MODELS)
    rows = {r["attempt_id"]: r for r in table.to_pylist()}
    assert rows["t-0"]["stop_reason"] == "config_invalid" and rows["t-0"]["config_iterations"] == 2
    assert rows["t-0"]["turns"] == [] and rows["t-0"]["stop_turn"] is None
    assert (rows["t-1"]["stop_reason"], rows["t-1"]["turns_verified"], rows["t-1"]["accepted"]) == ("query_repeated", 1, True)


def test_an_endpoint_that_stays_down_fails_the_wave_and_is_never_recorded_as_data():
    cfg = SynthesizeConfig(turns=1, candidates=2, reviewers=1)
    gw = ScriptedLiteLLM({("t-0", "generator"): [json.dumps(CONFIG), "Make a folder reports."]})
    real = Gateway.batch

    def failing(self, requests, on_result=None):  # the action endpoint is down
        if requests and requests[0].role == "action":
            requests = [replace(r, model="openai/act", api_base="http://127.0.0.1:9/v1") for r in requests]
            return real(self, requests, on_result)
        return ScriptedLiteLLM.batch(self, requests, on_result)

    gw.batch = failing.__get__(gw)
    gw.strict = True  # as every pipeline gateway (tasks.limits.gateway_for)
    with pytest.raises(EndpointUnavailable, match="2 of 2 requests to openai/act"):
        syn.synthesize_wave([_spec(0)], gw, cfg, MODELS)


def test_mix_takes_a_stable_share_and_refuses_duplicate_ids():
    import pyarrow as pa

    from progra_core.data.mix import mix

    def rows(prefix, n, source):
        return [{"trajectory_id": f"{prefix}{i}", "source": source, "turns": [], "n_turns": 0, "n_calls": 0} for i in range(n)]

    ingested = pa.Table.from_pylist(rows("bfcl:", 5, "bfcl"), schema=TRAJECTORIES)
    synth = pa.Table.from_pylist(rows("synth:", 40, "synth") + rows("bfcl:", 1, "synth"), schema=TRAJECTORIES)
    full, rej, st = mix(ingested, synth, SynthesizeConfig(mix=1.0))
    assert full.num_rows == 45 and [r["reason"] for r in rej] == ["duplicate_trajectory_id"]
    assert st["by_source"] == {"bfcl": 5, "synth": 40} and st["rows_in"] == 46
    half, _, _ = mix(ingested, synth, SynthesizeConfig(mix=0.5))
    more, _, _ = mix(ingested, synth, SynthesizeConfig(mix=0.8))
    kept = set(half.column("trajectory_id").to_pylist())
    assert 5 + 10 <= half.num_rows <= 5 + 30 and kept <= set(more.column("trajectory_id").to_pylist())  # a larger share only adds
    only, _, st = mix(ingested, synth, SynthesizeConfig(keep_ingested=False))
    assert set(only.column("source").to_pylist()) == {"synth"} and only.num_rows == 41
