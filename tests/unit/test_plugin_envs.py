"""Your own environments: a Python class whose methods are the tools, and an MCP server (the
official SDK, stdio and streamable HTTP), each behind the same Env protocol as BFCL and τ². The
plugins are the documented example, examples/notebook/; tests/plugins/hostile_mcp.py misbehaves
on purpose, and every misbehaviour must come back as an error observation or a named error,
never a hang."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from progra_core.calls import Call
from progra_core.envs import budget, registry
from progra_core.envs.base import EnvError
from progra_core.envs.factory import make_env, resolver

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "notebook"
HOSTILE = Path(__file__).resolve().parents[1] / "plugins" / "hostile_mcp.py"
CLASS = f"{EXAMPLE / 'notebook.py'}:Notebook"
CONFIG = {"owner": "Ann Lee", "notes": {"groceries": "milk and eggs"}}


def mcp_spec(**extra) -> dict:
    return {"mcp": {"command": [sys.executable, str(EXAMPLE / "notebook_mcp.py")], "state_tool": "state", **extra}}


@pytest.fixture(scope="module")
def notes_class():
    registry.use("notes_py", CLASS)
    return "notes_py"


@pytest.fixture(scope="module")
def notes_mcp():
    registry.use("notes_mcp", mcp_spec())
    return "notes_mcp"


@pytest.fixture(scope="module")
def hostile_mcp():
    registry.use("notes_hostile", {"mcp": {"command": [sys.executable, str(HOSTILE)], "state_resource": "hostile://state"}})
    return "notes_hostile"


def test_a_class_env_offers_its_documented_methods_and_runs_only_those(notes_class):
    docs = {d["name"]: d for d in registry.docs(notes_class, [])}
    assert sorted(docs) == ["add_note", "delete_note", "list_notes", "read_note"]  # not state(), not __init__
    assert docs["add_note"]["parameters"]["required"] == ["title", "text"]
    assert docs["add_note"]["parameters"]["properties"]["text"] == {"type": "string", "description": "What the note says."}

    env = make_env(notes_class, [], json.dumps(CONFIG))  # a killable worker process holds the instance
    assert env.scenario().startswith("A notebook of titled notes")
    obs = env.execute('[add_note("todo", text="call Bob"), read_note(title="groceries"), read_note(title="nope"), '
                      'nosuch(x=1), add_note(title="a", body="b"), add_note(title="a")]')
    assert obs[:2] == ["added todo", "milk and eggs"]
    assert obs[2] == "Error: KeyError: \"no note titled 'nope'\""
    assert obs[3].startswith("Error: there is no tool named 'nosuch' (tools: add_note, delete_note, list_notes, read_note")
    assert obs[4] == "Error: add_note() got unexpected arguments ['body']"
    assert obs[5] == "Error: add_note() is missing required arguments ['text']"
    assert env.snapshot() == {"state": {"notes": {"groceries": "milk and eggs", "todo": "call Bob"}}}
    # model output is parsed, never run: an expression is not a call of a listed tool
    assert env.execute("[__import__('os').system('touch /tmp/pwned')]")[0].startswith("Error")
    assert env.execute("[_private()]")[0].startswith("Error during parsing: private or dunder")
    assert env.execute([Call("__init__", {}, ())])[0].startswith("Error: there is no tool named '__init__'")
    assert env.execute([Call("state", {}, ())])[0].startswith("Error: there is no tool named 'state'")
    # each episode is a fresh instance; success is BFCL's rule (same state, every expected observation)
    twin = make_env(notes_class, [], CONFIG)
    assert not env.same_state(twin) and twin.snapshot()["state"]["notes"] == CONFIG["notes"]
    twin.execute('[add_note(title="todo", text="call Bob")]')
    assert env.same_state(twin) and twin.success(env, ["added todo"], ["added todo"])
    assert not twin.success(env, ["added todo", "deleted x"], ["added todo"])
    # positional arguments are named from the schema, without building an episode
    assert resolver(notes_class, [])(Call("add_note", {}, ("t", "x"))) == Call("add_note", {"title": "t", "text": "x"}, ())


def test_a_runaway_or_oversized_class_method_is_an_error_observation(tmp_path, monkeypatch):
    (tmp_path / "bad_env.py").write_text('''
class Bad:
    """Misbehaves."""

    def spin(self) -> str:
        """Never returns."""
        while True:
            pass

    def big(self, n: int) -> str:
        """A long result.

        Args:
            n: how long
        """
        return "y" * n
''')
    registry.use("bad_py", f"{tmp_path / 'bad_env.py'}:Bad")
    monkeypatch.setattr(budget, "CALL_SECONDS", 0.5)
    monkeypatch.setattr(budget, "MAX_OBSERVATION_CHARS", 1000)
    env = make_env("bad_py", [], None)
    start = time.monotonic()
    spun, big, fine = env.execute("[spin(), big(n=5000), big(n=10)]")
    assert time.monotonic() - start < 5
    assert spun.startswith("Error: ") and "budget" in spun
    assert big.startswith("Error: budget: the result has 5000 characters") and fine == "y" * 10


def test_a_class_that_cannot_be_a_set_of_tools_is_refused_when_the_config_loads(tmp_path):
    (tmp_path / "undocumented.py").write_text("class U:\n    def go(self, x):\n        return x\n")
    with pytest.raises(EnvError, match=r"U.go cannot be a tool: .*type hint"):
        registry.use("undocumented", f"{tmp_path / 'undocumented.py'}:U")
    with pytest.raises(EnvError, match="cannot load 'Nope'"):
        registry.use("missing", f"{EXAMPLE / 'notebook.py'}:Nope")
    with pytest.raises(EnvError, match="built in"):
        registry.use("bfcl", CLASS)
    from progra_core.config import load_config

    with pytest.raises(ValueError, match="envs.u: .*cannot be a tool"):
        load_config("embedded", overrides=["envs=" + json.dumps({"u": f"{tmp_path / 'undocumented.py'}:U"})])


def test_the_config_loads_its_envs_in_every_process_that_gets_it(tmp_path, monkeypatch):
    """A file path relative to where the config loads is made absolute, and an unpickled config
    (a Dask/Ray worker, a training job) registers the envs in its own process."""
    from progra_core.config import load_config

    monkeypatch.chdir(EXAMPLE)
    cfg = load_config("embedded", overrides=["envs=" + json.dumps({"notes_cfg": "notebook.py:Notebook"})])
    assert cfg.envs["notes_cfg"] == CLASS and registry.get("notes_cfg").name == "notes_cfg"
    blob = tmp_path / "cfg.pkl"
    blob.write_bytes(pickle.dumps(cfg))
    code = ("import pickle, sys; from progra_core.envs import registry; from progra_core.envs.factory import make_env; "
            f"cfg = pickle.load(open({str(blob)!r}, 'rb')); "
            "print(make_env('notes_cfg', [], {'notes': {'a': 'b'}}).execute('[list_notes()]')[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == '["a"]'


def test_an_mcp_server_is_an_env_with_a_fresh_process_per_episode(notes_mcp):
    docs = {d["name"]: d for d in registry.docs(notes_mcp, [])}
    assert sorted(docs) == ["add_note", "delete_note", "list_notes", "read_note"]  # the state tool is hidden
    assert docs["read_note"]["parameters"]["required"] == ["title"] and "ctx" not in docs["read_note"]["parameters"]["properties"]
    env = make_env(notes_mcp, [], CONFIG)  # the config reaches the server (PROGRA_ENV_CONFIG)
    assert env.scenario().startswith("A notebook of titled notes")
    obs = env.execute('[add_note("todo", "call Bob"), read_note(title="groceries"), read_note(title="nope"), list_notes()]')
    assert obs[:2] == ["added todo", "milk and eggs"] and obs[2].startswith("Error: ") and "no note titled" in obs[2]
    assert json.loads(obs[3]) == ["groceries", "todo"]
    assert env.snapshot() == {"state": {"notes": {"groceries": "milk and eggs", "todo": "call Bob"}}}
    other = make_env(notes_mcp, [], None)  # another process: nothing shared
    assert other.snapshot() == {"state": {"notes": {}}} and not other.same_state(env)


def test_a_misbehaving_mcp_server_never_hangs_the_run(hostile_mcp, monkeypatch):
    monkeypatch.setattr(budget, "CALL_SECONDS", 2.0)
    monkeypatch.setattr(budget, "MAX_OBSERVATION_CHARS", 10_000)
    env = make_env(hostile_mcp, [], CONFIG)
    start = time.monotonic()
    slow, after = env.execute('[slow(seconds=30), add_note(title="x", text="y")]')
    assert time.monotonic() - start < 10
    assert slow.startswith("Error: ") and "budget" in slow and after == "added x"  # the session survives a timeout
    assert env.execute("[huge(chars=50000)]")[0].startswith("Error: budget: the result has 50000 characters")
    assert env.execute("[huge(chars=10)]")[0] == "x" * 10 and env.snapshot() == {"state": {"calls": "many"}}  # a resource
    # a name the server never listed does not reach it; a tool the server dropped since is an error too
    assert env.execute("[rm_rf(path='/')]")[0].startswith("Error: there is no tool named 'rm_rf'")
    dropped, gone = env.execute('[drop_tool(name="read_note"), read_note(title="x")]')
    assert dropped == "dropped read_note" and gone.startswith("Error: ") and "read_note" in gone
    # the server dies mid-call: that call and every later one are error observations, at once
    start = time.monotonic()
    died, later = env.execute('[die(), add_note(title="a", text="b")]')
    assert died.startswith("Error: ") and later.startswith("Error: ") and time.monotonic() - start < 10


@pytest.mark.parametrize("command, why", [
    ([sys.executable, "-c", "import sys; sys.exit(2)"], "cannot start the server"),
    ([sys.executable, "-c", "import time; time.sleep(60)"], "did not start and list its tools within 3 s"),
    (["/nonexistent/server"], "cannot start the server"),
])
def test_an_mcp_server_that_does_not_start_is_a_named_error_in_bounded_time(command, why):
    from progra_core.envs.mcp_env import mcp_kind

    kind = mcp_kind("broken", {"command": command, "start_timeout_s": 3})
    start = time.monotonic()
    with pytest.raises(EnvError, match=why):
        kind.build([], None, False)
    assert time.monotonic() - start < 15


def test_an_mcp_spec_is_checked_when_the_config_loads():
    from progra_core.envs.mcp_env import mcp_kind

    with pytest.raises(EnvError, match="exactly one of command"):
        mcp_kind("x", {})
    with pytest.raises(EnvError, match="name its reset_tool"):
        mcp_kind("x", {"url": "http://127.0.0.1:1/mcp"})
    with pytest.raises(EnvError, match="Extra inputs"):
        mcp_kind("x", {"command": ["a"], "shell": True})


def test_a_running_mcp_server_over_streamable_http_is_reset_per_episode(tmp_path):
    from tests.conftest import free_port

    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, str(EXAMPLE / "notebook_mcp.py"), "--http", str(port)], stdout=log, stderr=log,
                            start_new_session=True)
    try:
        registry.use("notes_http", {"mcp": {"url": f"http://127.0.0.1:{port}/mcp", "reset_tool": "reset",
                                            "state_tool": "state", "start_timeout_s": 30}})
        deadline = time.monotonic() + 60
        while True:
            try:
                first = make_env("notes_http", [], CONFIG)
                break
            except EnvError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert "reset" not in {d["name"] for d in first.tools()}  # the reset tool is not the model's
        assert first.execute('[add_note(title="t", text="u")]') == ["added t"]
        assert first.snapshot()["state"]["notes"] == {"groceries": "milk and eggs", "t": "u"}
        second = make_env("notes_http", [], {"notes": {}})  # the same server, its own session, reset
        assert second.snapshot() == {"state": {"notes": {}}}
        assert second.execute('[add_note(title="v", text="w")]') == ["added v"]  # two open episodes stay apart
        assert first.snapshot()["state"]["notes"] == {"groceries": "milk and eggs", "t": "u"}
        assert second.snapshot()["state"]["notes"] == {"v": "w"}
    finally:
        proc.kill()
        proc.wait()
        log.close()


def test_chat_records_of_a_plugin_env_take_its_tool_docs(notes_class, tmp_path):
    from progra_core.sources.chat import iter_jsonl

    def rec(name, **kw):
        return {"env": notes_class, "messages": [
            {"role": "user", "content": "Add a todo note."},
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": name, "arguments": '{"title": "todo", "text": "x"}'}}]},
            {"role": "tool", "content": "added todo"}], **kw}

    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (rec("add_note", id="ok"), rec("format_disk", id="bad"),
                                                      rec("add_note", id="odd", env="nope"))) + "\n")
    rows, rejects = [], []
    for row, rej in iter_jsonl(path, "plug"):
        (rows if row is not None else rejects).append(row or rej)
    assert [r["trajectory_id"] for r in rows] == ["plug:ok"]
    assert [d["name"] for d in json.loads(rows[0]["tools"])] == ["add_note", "delete_note", "list_notes", "read_note"]
    assert rows[0]["env"] == notes_class and rows[0]["involved_classes"] == []
    assert sorted(r["reason"] for r in rejects) == ["unknown_env", "unknown_function"]


def test_progra_envs_lists_the_config_envs_and_opens_one():
    """`progra envs` before a run: which envs exist, and whether yours loads with the tools you meant."""
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    config = str(EXAMPLE / "notebook.yaml")
    listed = runner.invoke(app, ["envs", "--config", config], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    assert "notebook" in listed.output and "your config" in listed.output and "[tau2 domain]" in listed.output
    opened = runner.invoke(app, ["envs", "notebook", "--config", config], terminal_width=200)
    assert opened.exit_code == 0, opened.output
    assert "4 tools" in opened.output and "add_note" in opened.output and "scenario: A notebook of titled notes" in opened.output
    broken = runner.invoke(app, ["envs", "--set", 'envs={"x": "nowhere.py:X"}'], terminal_width=200)
    assert broken.exit_code == 2 and "envs.x" in broken.output


def test_synthesis_plans_and_checks_configs_for_a_plugin_env(notes_class):
    """A plugin env's attempts draw their exemplars from synthesize.seeds (BFCL's class sets of the
    profile do not apply), and a generated config must be an object the env accepts, not a seed."""
    from progra_core.config import load_config
    from progra_core.data.synthesis_checks import validate_plugin_config
    from progra_core.data.synthesize import plan_attempts

    seeds = [CONFIG, {"owner": "Raj", "notes": {}}]
    cfg = load_config("embedded", overrides=["synthesize.enabled=true", f"synthesize.env={notes_class}",
                                             "synthesize.seeds=" + json.dumps(seeds), "synthesize.attempts=3"])
    assert cfg.synthesize.involved_classes  # the profile's BFCL class sets are still there ...
    specs = plan_attempts(cfg.synthesize, [{"id": f"seed-{i}", "involved_classes": [], "initial_config": s}
                                           for i, s in enumerate(seeds)])
    assert [s["involved_classes"] for s in specs] == [[], [], []]  # ... and ignored
    assert all(s["exemplars"] and s["exemplars"][0] in seeds for s in specs)
    assert validate_plugin_config('{"owner": "Mo", "notes": {"a": "b"}}', notes_class, seeds) == (
        {"owner": "Mo", "notes": {"a": "b"}}, None)
    assert validate_plugin_config(json.dumps(CONFIG), notes_class, seeds)[1].startswith("copied_exemplar")
    assert validate_plugin_config('{"colour": "red"}', notes_class, seeds)[1].startswith("class_rejected: ")
    assert validate_plugin_config("[1, 2]", notes_class, seeds)[1].startswith("not_object")
    with pytest.raises(ValueError, match="give synthesize.seeds"):
        load_config("embedded", overrides=["synthesize.enabled=true", f"synthesize.env={notes_class}"])
