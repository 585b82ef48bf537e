"""Env work bounded by construction: an env that runs calls lives in a worker process the caller
kills at the budget (progra_core/envs/isolated.py). One long C operation, which no exception can
interrupt, ends as an error observation in bounded time with the episode's state as before it;
a dead worker, a broken action and cross-thread comparisons keep working. Before: in-process
only, ``round_number(number=15, decimal_places=-10**14)`` computes 10**(10**14) in C and never
returns (a smaller exponent took 12 s against the 5 s budget)."""

from __future__ import annotations

import threading
import time

import pytest

from progra_core.calls import Call
from progra_core.envs import budget, isolated
from progra_core.envs.base import EnvError
from progra_core.envs.bfcl import StateTooLarge
from progra_core.envs.factory import make_env

FS = {"GorillaFileSystem": {"root": {"w": {"type": "directory", "contents": {}}}}}
CLASSES = ["MathAPI", "GorillaFileSystem"]
#: round(int, -n) builds 10**n in C: no Python bytecode runs, so the in-process watchdog cannot fire
C_LEVEL = Call("round_number", {"number": 15, "decimal_places": -(10**14)})
#: a kill, a fresh interpreter and the replay of a few calls
RESTART = 2.0


@pytest.fixture
def short_budgets(monkeypatch):
    monkeypatch.setattr(budget, "CALL_SECONDS", 0.4)
    monkeypatch.setattr(budget, "ACTION_SECONDS", 1.0)
    monkeypatch.setattr(budget, "EPISODE_SECONDS", 2.0)
    monkeypatch.setattr(budget, "STATE_SECONDS", 0.4)


@pytest.mark.parametrize("places", [10**8, 10**14])
def test_a_c_level_call_is_stopped_at_its_budget_and_the_state_survives(short_budgets, monkeypatch, places):
    monkeypatch.setattr(budget, "ACTION_SECONDS", 3.0)  # room for the call after it
    env = make_env("bfcl", CLASSES, FS)
    assert isinstance(env, isolated.IsolatedEnv)
    made = env.execute("[mkdir(dir_name='kept'), cd(folder='kept'), touch(file_name='a.txt')]")
    assert not any(budget.budget_error(o) for o in made), made
    restarts = env._worker.restarts
    t = time.monotonic()
    obs = env.execute([Call("round_number", {"number": 15, "decimal_places": -places}), Call("ls", {})])
    took = time.monotonic() - t
    assert took < 0.4 + isolated.GRACE_SECONDS + RESTART, took
    assert budget.budget_error(obs[0]) and "worker was stopped" in obs[0], obs
    assert obs[1] == '{"current_directory_content": ["a.txt"]}'  # the files and the cwd made before it are there
    assert env._worker.restarts == restarts + 1
    assert [o for _, o in env.history][-2:] == obs  # recorded as a failed call, as the env records one
    assert "kept" in env.execute("[pwd()]")[0]


def test_an_action_of_c_level_calls_stops_at_the_action_budget(short_budgets):
    env = make_env("bfcl", CLASSES, FS)
    t = time.monotonic()
    obs = env.execute([C_LEVEL] * 6)
    took = time.monotonic() - t
    assert took < 1.0 + isolated.GRACE_SECONDS + RESTART, took
    assert all(budget.budget_error(o) for o in obs)
    assert "this action's 1 s budget is spent" in obs[-1]


def test_an_episode_of_stopped_calls_spends_its_budget(short_budgets):
    """A stopped call is charged to the episode in the fresh worker: the episode's budget holds
    across restarts."""
    env = make_env("bfcl", CLASSES, FS)
    for _ in range(6):  # 6 x 0.4 s charged > 2 s
        env.execute([C_LEVEL])
    assert "the episode's 2 s budget is spent" in env.execute("[pwd()]")[0]


def test_a_worker_that_dies_mid_episode_is_an_error_observation_and_the_episode_goes_on():
    env = make_env("bfcl", CLASSES, FS)
    env.execute("[mkdir(dir_name='kept')]")
    env._worker._proc.kill()
    env._worker._proc.wait(5)
    obs = env.execute_one(Call("ls", {}))
    assert budget.budget_error(obs) and "worker process died" in obs, obs
    assert env.execute("[ls()]") == ['{"current_directory_content": ["kept"]}']


def test_state_checks_across_threads_and_after_a_restart(short_budgets):
    """The ground truth's twin built in another thread (another worker) is copied in by replay;
    a comparison after a restart sees the rebuilt state."""
    made = {}
    t = threading.Thread(target=lambda: made.setdefault("truth", make_env("bfcl", CLASSES, FS)))
    t.start()
    t.join()
    truth = made["truth"]
    truth.execute("[mkdir(dir_name='x')]")
    env = make_env("bfcl", CLASSES, FS)
    assert env._worker is not truth._worker
    assert not env.same_state(truth)
    env.execute("[mkdir(dir_name='x')]")
    assert env.same_state(truth) and env.success(truth, ["None"], ["None"])
    env.execute([C_LEVEL])
    assert env.same_state(truth)


def test_snapshot_bounds_hold_in_the_worker(short_budgets):
    env = make_env("bfcl", ["GorillaFileSystem"], FS)
    env.execute("[mkdir(dir_name='L0'), cd(folder='L0'), touch(file_name='f'), cd(folder='..')]")
    for i in range(24):  # copies that share children: the paths double per level
        env.execute([Call("cp", {"source": f"L{i}", "destination": f"A{i}"}), Call("mkdir", {"dir_name": f"L{i + 1}"}),
                     Call("cp", {"source": f"L{i}", "destination": f"L{i + 1}"}),
                     Call("cp", {"source": f"A{i}", "destination": f"L{i + 1}"})])
    t = time.monotonic()
    with pytest.raises(StateTooLarge):
        env.snapshot()
    assert time.monotonic() - t < 0.4 + isolated.GRACE_SECONDS + RESTART


def test_a_config_the_class_rejects_is_an_env_error_from_the_worker():
    with pytest.raises(EnvError, match="cannot load this config"):
        make_env("bfcl", ["GorillaFileSystem"], {"GorillaFileSystem": {"root": 7}})
    with pytest.raises(EnvError, match="unknown env kind"):
        make_env("bfcl2", ["MathAPI"], None)


def test_envs_share_their_threads_worker():
    a, b = make_env("bfcl", CLASSES, FS), make_env("bfcl", ["MathAPI"], None)
    assert a._worker is b._worker and a._worker.alive
    before = isolated.live_workers()
    threads = [threading.Thread(target=lambda: make_env("bfcl", ["MathAPI"], None).execute("[add(a=1, b=2)]")) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isolated.live_workers() <= before + 3
    make_env("bfcl", ["MathAPI"], None)  # ended threads whose envs are gone: their workers are closed
    assert isolated.live_workers() <= before


def test_a_new_thread_never_inherits_an_ended_threads_worker():
    """Thread ids are reused once a thread ends; a worker is per thread object, so a new thread whose
    id equals an ended one's (whose env is still referenced) starts its own worker, with this
    moment's sys.path and plugins. Keyed by id, a plugin test failed when it inherited a worker
    started before its module path was added."""
    kept, workers, idents = [], [], []

    def episode():
        env = make_env("bfcl", ["MathAPI"], None)
        kept.append(env)  # outlives its thread
        workers.append(env._worker)
        idents.append(threading.get_ident())

    for _ in range(3):
        t = threading.Thread(target=episode)
        t.start()
        t.join()
    assert len(set(map(id, workers))) == 3, idents  # three threads, three workers, however the ids were reused
    assert all(w.alive for w in workers)
