import builtins
import json

import pytest

from progra_core.calls import Call, parse_calls
from progra_core.envs import bfcl as bfcl_env
from progra_core.envs.base import EnvError
from progra_core.envs.bfcl import BFCLEnv

FS = {"GorillaFileSystem": {"root": {"alice": {"type": "directory", "contents": {
    "notes.txt": {"type": "file", "content": "hello world"},
    "docs": {"type": "directory", "contents": {}}}}}}}


@pytest.fixture()
def shadow(monkeypatch):
    monkeypatch.setitem(bfcl_env.BFCL_CLASSES, "ShadowAPI", "tests.unit.fixtures.shadow_api")
    bfcl_env._class.cache_clear()
    yield
    bfcl_env._class.cache_clear()


def test_executes_and_formats_like_bfcl():
    env = BFCLEnv(FS, ["GorillaFileSystem", "MathAPI"])
    obs = env.execute(parse_calls("[ls(), cat(file_name='notes.txt'), add(a=1, b=2)]"))
    assert json.loads(obs[0]) == {"current_directory_content": ["notes.txt", "docs"]}
    assert json.loads(obs[1]) == {"file_content": "hello world"}
    assert json.loads(obs[2]) == {"result": 3}
    assert len(env.history) == 3


def test_bad_calls_become_error_observations():
    env = BFCLEnv(FS, ["GorillaFileSystem"])
    obs = env.execute([Call("nope"), Call("cd", {"wrong": 1}), Call("_load_scenario", {"scenario": {}}),
                       Call("__init__"), Call("cat", {"file_name": "missing.txt"})])
    assert obs[0] == "Error during execution: name 'nope' is not defined"
    assert obs[1].startswith("Error during execution:") and "unexpected keyword argument 'wrong'" in obs[1]
    assert obs[2] == "Error during execution: name '_load_scenario' is not defined"
    assert obs[3] == "Error during execution: name '__init__' is not defined"
    assert "missing.txt" in obs[4]


def test_text_input_with_parse_error_is_an_observation():
    env = BFCLEnv(FS, ["GorillaFileSystem"])
    assert env.execute("os.system('ls')")[0].startswith("Error during parsing: attribute access")


def test_never_evaluates(monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    env = BFCLEnv(FS, ["GorillaFileSystem", "MathAPI"])
    assert json.loads(env.execute("[mkdir(dir_name='x'), add(a=2, b=3)]")[1]) == {"result": 5}


def test_fresh_instances_per_env_and_config_not_mutated():
    cfg = json.loads(json.dumps(FS))
    a = BFCLEnv(cfg, ["GorillaFileSystem"])
    a.execute(parse_calls("[touch(file_name='new.txt'), rm(file_name='notes.txt')]"))
    b = BFCLEnv(cfg, ["GorillaFileSystem"])
    assert cfg == FS
    assert a.instances["GorillaFileSystem"] is not b.instances["GorillaFileSystem"]
    assert json.loads(b.execute([Call("ls")])[0])["current_directory_content"] == ["notes.txt", "docs"]
    assert not a.same_state(b)


def test_snapshot_is_json_and_tracks_state_changes():
    env = BFCLEnv(FS, ["GorillaFileSystem", "MathAPI"])
    s0 = env.snapshot()
    json.dumps(s0)
    assert "MathAPI" not in s0  # stateless
    env.execute(parse_calls("[ls(), cat(file_name='notes.txt')]"))
    assert env.snapshot() == s0  # read-only calls
    env.execute(parse_calls("[echo(content='x', file_name='notes.txt')]"))
    s1 = env.snapshot()
    assert s1 != s0
    assert s1["GorillaFileSystem"]["root"]["contents"]["notes.txt"]["content"] == "x"


def test_resolve_positional_to_names():
    env = BFCLEnv(FS, ["GorillaFileSystem"])
    assert env.resolve(Call("sort", {}, ("notes.txt",))) == Call("sort", {"file_name": "notes.txt"})
    assert env.resolve(Call("mv", {"destination": "docs", "source": "notes.txt"})) == Call("mv", {"source": "notes.txt", "destination": "docs"})
    bad = Call("sort", {}, ("a", "b", "c"))
    assert env.resolve(bad) == bad


def test_name_owned_by_two_classes_is_an_error(shadow):
    env = BFCLEnv(FS, ["GorillaFileSystem", "ShadowAPI"])
    obs = env.execute([Call("ls"), Call("boom")])
    assert "ambiguous" in obs[0] and "GorillaFileSystem" in obs[0] and "ShadowAPI" in obs[0]
    assert obs[1] == "Error during execution: kaboom"
    assert env.instances["ShadowAPI"].calls == 0


def test_bad_construction_raises_env_error():
    with pytest.raises(EnvError, match="unknown BFCL class"):
        BFCLEnv({}, ["NoSuchAPI"])
    with pytest.raises(EnvError, match="not valid JSON"):
        BFCLEnv("{nope", ["GorillaFileSystem"])
    with pytest.raises(EnvError, match="must be an object"):
        BFCLEnv({"GorillaFileSystem": [1, 2]}, ["GorillaFileSystem"])
    with pytest.raises(EnvError, match="cannot load"):
        BFCLEnv({"GorillaFileSystem": {"root": {"x": {"type": "directory"}}}}, ["GorillaFileSystem"])
    with pytest.raises(EnvError, match="empty"):
        BFCLEnv({}, [])


def test_tools_are_bfcl_docs():
    env = BFCLEnv({}, ["MathAPI", "GorillaFileSystem"])
    names = [t["name"] for t in env.tools()]
    assert "add" in names and "ls" in names
    assert all("parameters" in t for t in env.tools())
    assert "MathAPI" in env.scenario()


def test_arguments_are_copied_so_calls_never_alias_env_state():
    """post_tweet keeps its mentions list and mention() extends it: without a copy the Call (and
    any other env it is replayed in) would change under our feet."""
    env = BFCLEnv({"TwitterAPI": {"username": "u", "password": "p", "authenticated": True}}, ["TwitterAPI"])
    post = Call("post_tweet", {"content": "hi", "tags": ["#a"], "mentions": ["@b"]})
    env.execute([post])
    env.execute([Call("mention", {"tweet_id": 0, "mentioned_usernames": ["@c"]})])
    assert post.args["mentions"] == ["@b"]
    assert env.instances["TwitterAPI"].tweets[0]["mentions"] == ["@b", "@c"]
