"""Environments are found by kind (progra_core/envs/registry.py): BFCL and τ² built in, a plugin
named by import path in the user's config (loaded the same way in the killable worker process),
an installed package's entry point. A name in a data row is looked up, never imported."""

from __future__ import annotations

import sys
import textwrap
import threading

import pytest

from progra_core.calls import Call
from progra_core.envs import registry
from progra_core.envs.base import EnvError
from progra_core.envs.factory import make_env
from progra_core.sources.chat import record_to_trajectory
from progra_core.sources.strict import RecordError

FS = {"GorillaFileSystem": {"root": {"w": {"type": "directory", "contents": {}}}}}

PLUGIN = '''
from progra_core.envs.bfcl import BFCLEnv
from progra_core.envs.registry import EnvKind

class Counted(BFCLEnv):
    """BFCL's file system under another kind: what a plugin env looks like to the pipeline."""

KIND = EnvKind("countedfs", "involved_classes = BFCL classes", lambda classes, config, long_context: Counted(config, classes),
               error_prefix="Error during execution: ")
'''


def test_builtin_kinds_and_an_unknown_one():
    assert registry.get(None).name == "bfcl" and registry.get("tau2").name == "tau2"
    assert {"bfcl", "tau2"} <= set(registry.names())
    with pytest.raises(EnvError, match="unknown env kind 'shop'; known: .*'bfcl'.*'tau2'"):
        registry.get("shop")
    with pytest.raises(EnvError, match="exactly one domain"):
        registry.check("tau2", ["airline", "retail"])


def test_a_data_row_never_imports_the_module_it_names(tmp_path, monkeypatch):
    (tmp_path / "sneaky_env_mod.py").write_text("import pathlib\npathlib.Path(__file__).with_suffix('.ran').touch()\nKIND = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rec = {"env": "sneaky_env_mod:KIND", "involved_classes": ["X"], "messages": [{"role": "user", "content": "q"}]}
    with pytest.raises(RecordError, match="unknown env kind 'sneaky_env_mod:KIND'"):
        record_to_trajectory(rec, "jsonl", "r1")
    with pytest.raises(EnvError, match="unknown env kind"):
        make_env("sneaky_env_mod:KIND", ["X"], None)
    assert "sneaky_env_mod" not in sys.modules and not (tmp_path / "sneaky_env_mod.ran").exists()
    with pytest.raises(EnvError, match="is a name"):
        registry.get(["bfcl"])


def test_a_config_named_plugin_runs_in_the_worker_process_too(tmp_path, monkeypatch):
    (tmp_path / "my_plugin_env.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(EnvError, match="built in"):
        registry.use("bfcl", "my_plugin_env:KIND")
    with pytest.raises(EnvError, match="called 'countedfs'"):
        registry.use("other", "my_plugin_env:KIND")
    with pytest.raises(EnvError, match="cannot load 'NOPE'"):
        registry.use("countedfs", "my_plugin_env:NOPE")
    kind = registry.use("countedfs", "my_plugin_env:KIND")
    assert registry.get("countedfs") is kind and registry.origin("countedfs") == "my_plugin_env:KIND"
    assert type(registry.build("countedfs", ["GorillaFileSystem"], FS)).__name__ == "Counted"
    out = {}

    def episode():  # a fresh thread: a fresh worker process, which knows the plugin only from the origin it is sent
        env = make_env("countedfs", ["GorillaFileSystem"], FS)
        out["obs"] = env.execute([Call("mkdir", {"dir_name": "x"}), Call("ls", {}), Call("rm", {"file_name": "nope"})])
        out["name"] = env.name

    t = threading.Thread(target=episode)
    t.start()
    t.join(60)
    assert out["name"] == "countedfs" and '"x"' in out["obs"][1] and "No such file" in out["obs"][2]
