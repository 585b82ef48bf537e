"""τ²-bench as an environment: reference actions reach τ²'s own expected state, the Env protocol
holds for BFCLEnv and Tau2Env alike, a scripted agent replaying the reference actions passes τ²'s
evaluator (and a silent one fails where it must), telecom never trains, PAG-RL rewards τ² episodes
with the env's own state check."""

import builtins
import json
import random
import subprocess
import sys

import pyarrow as pa
import pytest
from pydantic import ValidationError

from progra_core.calls import Call, calls_from_records, format_call
from progra_core.config import EvaluateConfig, IngestConfig, load_config
from progra_core.envs.base import Env, EnvError
from progra_core.envs.bfcl import BFCLEnv
from progra_core.envs.factory import make_env
from progra_core.envs.tau2 import DOMAINS, Tau2Env, load_tasks, reference_calls, safe_calculate
from progra_core.evaluation.bfcl import Subject
from progra_core.llm.gateway import ChatResult

FS = {"GorillaFileSystem": {"root": {"alice": {"type": "directory", "contents": {
    "notes.txt": {"type": "file", "content": "hello world"}}}}}}


def test_tau2_run_imports_in_a_clean_interpreter():
    out = subprocess.run([sys.executable, "-c", "import tau2.run, tau2.evaluator.evaluator, tau2.user.user_simulator; print('ok')"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def _gold(domain: str, task):
    """The expected state as τ² builds it: its own constructor, the task's initial state, the
    reference actions through make_tool_call, tools synced after each (as its orchestrator does;
    telecom's device state depends on it)."""
    from tau2.registry import registry

    env = registry.get_env_constructor(domain)()
    s = task.initial_state
    if s is not None:
        env.set_state(s.initialization_data, s.initialization_actions, s.message_history or [])
    for a in task.evaluation_criteria.actions or []:
        try:
            env.make_tool_call(a.name, requestor=a.requestor, **a.arguments)
        except Exception:  # τ²'s reference actions include calls that fail by design
            pass
        env.sync_tools()
    return env


@pytest.mark.parametrize("domain", DOMAINS)
def test_reference_actions_reach_the_expected_state(domain):
    tasks = [t for t in load_tasks(domain, "train") if t.evaluation_criteria.actions]
    sample = random.Random(0).sample(tasks, 4)
    for task in sample:
        env, untouched = Tau2Env(domain, task.initial_state), Tau2Env(domain, task.initial_state)
        for requestor, call in reference_calls(task):  # through text and ast, as model output arrives
            env.execute(f"[{format_call(call)}]", requestor=requestor)
        gold = _gold(domain, task)
        assert env.snapshot() == {"db_hash": gold.get_db_hash(), "user_db_hash": gold.get_user_db_hash()}, task.id
        assert env.assertions_met(task), task.id
        writes = any(gold.tools.tool_type(a.name).value == "write" for a in task.evaluation_criteria.actions
                     if a.requestor == "assistant" and gold.tools.has_tool(a.name))
        if writes or domain == "telecom":
            assert not env.same_state(untouched), task.id  # the check is not vacuous: the actions changed something


# -- the protocol over both envs ---------------------------------------------------------------

ENVS = {
    "bfcl": (lambda: BFCLEnv(FS, ["GorillaFileSystem"]), "[mkdir(dir_name='new')]", "[ls()]"),
    "tau2": (lambda: Tau2Env("retail"), "[modify_user_address(user_id='mia_garcia_4516', address1='1 Main St', "
             "address2='', city='Austin', state='TX', country='USA', zip='73301')]", "[list_all_product_types()]"),
}


@pytest.fixture(params=sorted(ENVS))
def kind(request):
    return request.param


def test_both_envs_satisfy_the_protocol(kind):
    build, write, read = ENVS[kind]
    a, b = build(), build()
    assert isinstance(a, Env) and a.name == kind
    tools = a.tools()
    assert tools and all({"name", "description", "parameters"} <= set(t) for t in tools)
    assert isinstance(a.scenario(), str) and a.scenario()
    json.dumps(a.snapshot())  # JSON-able
    assert a.same_state(b) and a.success(b, [], [])
    [obs] = a.execute(read)
    assert "Error" not in obs and len(a.history) == 1
    a.execute(write)
    assert not a.same_state(b), "a write must change the state"
    assert b.snapshot() == build().snapshot(), "episodes share no state"
    b.execute(write)
    assert a.same_state(b)


def test_both_envs_turn_bad_calls_into_observations_and_never_eval(kind, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    env = ENVS[kind][0]()
    before = env.snapshot()
    obs = env.execute([Call("no_such_tool"), Call("_private"), Call("__init__")])
    assert len(obs) == 3 and all("rror" in o for o in obs)
    assert env.execute("__import__('os').system('id')")[0].startswith("Error during parsing")
    assert env.execute("os.system('id')")[0].startswith("Error during parsing")
    assert env.snapshot() == before


def test_make_env_dispatches_on_the_trajectory_env_column():
    """In process where nothing runs; in a killable worker otherwise, with the same answers."""
    assert isinstance(make_env("bfcl", ["GorillaFileSystem"], json.dumps(FS), isolated=False), BFCLEnv)
    assert isinstance(make_env("tau2", ["airline"], "null", isolated=False), Tau2Env)
    for kind, classes, config in (("bfcl", ["GorillaFileSystem"], json.dumps(FS)), ("tau2", ["airline"], "null")):
        iso, local = make_env(kind, classes, config), make_env(kind, classes, config, isolated=False)
        assert iso.name == local.name == kind and iso.tools() == local.tools() and iso.scenario() == local.scenario()
        assert iso.snapshot() == local.snapshot()
    telecom = make_env("tau2", ["telecom"], None)
    user_tool = telecom.tools("user")[0]["name"]
    assert "not found" not in telecom.execute([Call(user_tool)], requestor="user")[0]
    assert telecom.log[-1][0].requestor == "user" and telecom.history[-1][0].name == user_tool
    with pytest.raises(EnvError):
        make_env("tau2", ["airline", "retail"], None)
    with pytest.raises(EnvError):
        make_env("tau2", ["bank"], None)
    with pytest.raises(EnvError):
        make_env("gym", ["x"], None)


def test_agent_cannot_reach_user_tools_and_calculate_never_evals(monkeypatch):
    env = Tau2Env("telecom")
    user_tool = env.tools("user")[0]["name"]
    assert "not found" in env.execute([Call(user_tool)])[0]  # the agent side has no device tools
    assert "not found" not in env.execute([Call(user_tool)], requestor="user")[0]
    monkeypatch.setattr(builtins, "eval", lambda *a, **k: pytest.fail("eval called"))
    air = Tau2Env("airline")
    assert air.execute("[calculate(expression='(120 + 80.5) * 2 / 3')]") == ["133.67"]
    assert air.execute("[calculate('10 - -4')]") == ["14.0"]
    assert air.execute("[calculate(expression='9**9**9**9')]")[0].startswith("Error: Invalid expression")
    assert air.execute("[calculate(expression='abc')]") == ["Error: Invalid characters in expression"]
    assert safe_calculate(None, "7 / 2") == "3.5"


# -- the scripted agent against τ²'s evaluator -------------------------------------------------

class ScriptedGateway:
    """The agent replays the task's reference actions one call a step, hands user-side actions to
    the user, then states the communicate info; the user answers the greeting with the request,
    runs what it is asked to, and stops when the agent has spoken its last. ``silent``: the agent
    only chats."""

    def __init__(self, tasks, silent: bool = False):
        self.plans = {f"{d}:{t.id}": self._plan(t, silent) for d, t in tasks}
        self.calls = 0

    @staticmethod
    def _plan(task, silent):
        agent, user, pending_user = [], [], []
        for requestor, call in ([] if silent else reference_calls(task)):
            if requestor == "user":
                pending_user.append(f"[{format_call(call)}]")
                continue
            if pending_user:
                agent.append("Please do the following on your phone.")
                user.append(pending_user + ["Done."])
                pending_user = []
            agent.append(f"[{format_call(call)}]")
        if pending_user:
            agent.append("Please do the following on your phone.")
            user.append(pending_user + ["Done."])
        info = task.evaluation_criteria.communicate_info or []
        agent.append("Here is what I found: " + "; ".join(info) if info else "Your request is complete.")
        return {"agent": agent, "user": [["I need help with my request."], *user, ["Thanks! ###STOP###"]]}

    def batch(self, reqs):
        out = []
        for r in reqs:
            plan = self.plans[r.id.split("#")[0]]
            if r.role == "policy":
                text = plan["agent"].pop(0) if plan["agent"] else "###STOP###"
            else:
                text = plan["user"][0].pop(0)
                if not plan["user"][0] and len(plan["user"]) > 1:
                    plan["user"].pop(0)
            self.calls += 1
            out.append(ChatResult(text, r.model, r.role, r.id))
        return out


def _tau2_cfg(**kw) -> EvaluateConfig:
    return EvaluateConfig(categories=[], tau2_domains=list(DOMAINS), trials=1, **kw)


def _play(tasks, silent=False, **kw) -> pa.Table:
    from progra_core.evaluation.tau2 import run_tau2

    table, rejects = run_tau2(tasks, ScriptedGateway(tasks, silent), Subject("base", "base", "local/smollm2"), _tau2_cfg(**kw),
                              {"model": "local/smollm2"})
    assert rejects == []
    return table


def _sample(domain, n, split="test"):
    return [(domain, t) for t in random.Random(1).sample(load_tasks(domain, split), n)]


@pytest.mark.parametrize("domain", DOMAINS)
def test_scripted_reference_agent_passes_tau2_evaluator(domain):
    tasks = _sample(domain, 3)
    table = _play(tasks)
    rows = table.to_pylist()
    assert [r["passed"] for r in rows] == [True] * len(tasks), [(r["entry_id"], r["error_type"], r["error"]) for r in rows]
    assert all(r["benchmark"] == "tau2" and r["category"] == domain and r["reward"] == 1.0 for r in rows)
    for (_, task), r in zip(tasks, rows, strict=True):
        msgs = json.loads(r["transcript"])
        assert msgs[0]["content"] == "Hi! How can I help you today?"
        called = [tc["name"] for m in msgs for tc in (m.get("tool_calls") or [])]
        assert called == [c.name for _, c in reference_calls(task)]
        assert r["n_calls"] == sum(1 for req, _ in reference_calls(task) if req == "assistant")


def test_silent_agent_fails_where_actions_change_the_database():
    pristine = Tau2Env("retail").snapshot()["db_hash"]
    writes = [("retail", t) for t in load_tasks("retail", "test")[:8] if _gold("retail", t).get_db_hash() != pristine][:3]
    assert len(writes) == 3
    rows = _play(writes, silent=True).to_pylist()
    assert [r["passed"] for r in rows] == [False] * len(writes)
    assert all(r["error_type"].startswith("tau2:") and "db" in r["error_type"] for r in rows)
    assert all(json.loads(r["error"])["breakdown"]["DB"] == 0.0 for r in rows)


def test_step_limit_ends_a_conversation_unfinished():
    tasks = _sample("airline", 1, "train")
    [row] = _play(tasks, tau2_max_steps=3).to_pylist()
    assert row["passed"] is False and row["error_type"] == "tau2:max_steps" and row["reward"] == 0.0


# -- training: trajectories, episodes, SUCCESS, telecom excluded ------------------------------

def test_telecom_cannot_be_selected_for_training():
    with pytest.raises(ValidationError, match="out-of-domain"):
        IngestConfig(tau2_domains=["airline", "telecom"])
    with pytest.raises(ValidationError, match="out-of-domain"):
        load_config("embedded", overrides=["ingest.tau2_domains=[telecom]"])
    with pytest.raises(ValidationError, match="unknown tau2"):
        IngestConfig(tau2_domains=["bank"])
    assert IngestConfig(tau2_domains=["airline", "retail"]).tau2_domains == ["airline", "retail"]
    assert EvaluateConfig(tau2_domains=["telecom"]).tau2_domains == ["telecom"]  # evaluating on it is the point
    from progra_core.sources import tau2 as tau2_data

    with pytest.raises(ValueError, match="not a training domain"):
        next(tau2_data.iter_trajectories(["telecom"]))


def test_train_tasks_become_trajectories_and_rl_episodes_rewarded_by_the_env(embedded_model):
    from transformers import AutoTokenizer

    from progra_core.config import GRPOConfig
    from progra_core.schemas import TRAJECTORIES
    from progra_core.sources.tau2 import iter_trajectories
    from progra_core.train.rewards import Rubric
    from progra_core.train.rollout import episodes_from_trajectories, run_episodes

    pairs = list(iter_trajectories(["airline", "retail"], limit=3))
    rows = [r for r, rej in pairs if r is not None]
    assert len(rows) == 6 and all(rej is None for _, rej in pairs)
    pa.Table.from_pylist(rows, schema=TRAJECTORIES)  # the trajectories contract holds
    test_ids = {t.id for t in load_tasks("airline", "test")}
    assert not any(r["source_id"] in test_ids for r in rows if r["category"] == "airline")
    episodes, rejects = episodes_from_trajectories(rows)
    assert {e.env for e in episodes} == {"tau2"} and len(episodes) + len(rejects) == 6
    # a task whose reference actions only read is won by doing nothing under τ²'s DB check: not an RL prompt
    assert rejects and all(r["reason"] == "vacuous_success" for r in rejects)
    for r in rejects:
        row = next(x for x in rows if x["trajectory_id"] == r["input_id"])
        idle = make_env("tau2", row["involved_classes"], row["initial_config"])
        replayed = make_env("tau2", row["involved_classes"], row["initial_config"])
        replayed.execute([c for a in row["turns"][0]["actions"] for c in calls_from_records(a["calls"])])
        assert idle.same_state(replayed)
    write_ep = episodes[0]  # every episode left changes the database
    tok = AutoTokenizer.from_pretrained(embedded_model)

    def script(texts):
        it = iter(texts)
        return lambda ctxs: [tok(next(it), add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for _ in ctxs]

    gold = [f"<answer>[{', '.join(format_call(c) for s in write_ep.turns[0]['steps'] for c in s)}]</answer>", "<answer>Done.</answer>"]
    [won] = run_episodes([write_ep], script(gold), tok, "raw", Rubric.from_config(GRPOConfig()), max_actions=4)
    [lost] = run_episodes([write_ep], script(["<answer>Sorry, I cannot help.</answer>"]), tok, "raw", Rubric.from_config(GRPOConfig()))
    assert won.turns_passed == [True] and lost.turns_passed == [False]
    assert won.returns["acc"] == 1.0 and lost.returns["acc"] == 0.0
