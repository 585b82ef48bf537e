"""Runaway work the per-call budget did not reach: an action of many slow calls, an episode of
many actions, and state walks (snapshot, the success check) over a state that copies made
exponentially large or that nests past Python's stack. Each is bounded and ends as an error
observation, a ``StateTooLarge`` or a failed check, in bounded time."""

from __future__ import annotations

import time

import pytest

from progra_core.calls import Call
from progra_core.envs import budget
from progra_core.envs.bfcl import BFCLEnv, StateTooLarge

FS = {"GorillaFileSystem": {"root": {"w": {"type": "directory", "contents": {}}}}}


def _shared_copies(levels: int) -> BFCLEnv:
    """``cp`` of a directory copies its contents dict shallowly, so two copies per level share
    their children: the number of paths doubles with each level while the calls stay cheap."""
    env = BFCLEnv(FS, ["GorillaFileSystem"])
    env.execute("[mkdir(dir_name='L0'), cd(folder='L0'), touch(file_name='f'), cd(folder='..')]")
    for i in range(levels):
        env.execute([Call("cp", {"source": f"L{i}", "destination": f"A{i}"}), Call("mkdir", {"dir_name": f"L{i + 1}"}),
                     Call("cp", {"source": f"L{i}", "destination": f"L{i + 1}"}),
                     Call("cp", {"source": f"A{i}", "destination": f"L{i + 1}"})])
    return env


@pytest.fixture
def short_budgets(monkeypatch):
    monkeypatch.setattr(budget, "CALL_SECONDS", 0.4)
    monkeypatch.setattr(budget, "ACTION_SECONDS", 1.0)
    monkeypatch.setattr(budget, "EPISODE_SECONDS", 2.0)


def test_one_action_of_many_slow_calls_stops_at_the_action_budget(short_budgets):
    """Before: each ``du`` over shared copies spent its whole call budget, so an action of 40 of
    them ran 40 budgets."""
    env = _shared_copies(24)
    t = time.monotonic()
    obs = env.execute([Call("du", {"human_readable": True})] * 8)
    took = time.monotonic() - t
    assert took < 1.0 + 0.4 + 0.5, took
    assert all(budget.budget_error(o) for o in obs)
    assert "this action's 1 s budget is spent" in obs[-1]


def test_an_episode_stops_at_its_budget_across_actions(short_budgets):
    env = _shared_copies(24)
    t = time.monotonic()
    outs = [env.execute([Call("du", {"human_readable": True})]) for _ in range(10)]
    assert time.monotonic() - t < 2.0 + 0.4 + 0.5
    assert "the episode's 2 s budget is spent" in outs[-1][0]
    # a cheap call after the episode's budget is spent is refused too: the instance is done
    assert "budget is spent" in env.execute("[pwd()]")[0]


def test_a_snapshot_of_exponentially_shared_copies_is_an_error_not_a_hang():
    """Before: after 40 such copies ``snapshot()`` walked 2**40 paths outside any budget (synthesis
    calls it after every turn)."""
    env = _shared_copies(40)
    t = time.monotonic()
    with pytest.raises(StateTooLarge, match="more than"):
        env.snapshot()
    assert time.monotonic() - t < 5
    twin = _shared_copies(40)
    t = time.monotonic()
    env.success(twin, [], [])  # either answer, in bounded time
    assert time.monotonic() - t < budget.STATE_SECONDS + 1


def test_deep_nesting_is_an_error_for_snapshot_and_a_failed_check_for_success():
    """Before: 1,500 nested mkdir/cd made ``snapshot()`` and ``success()`` raise RecursionError."""
    def deep() -> BFCLEnv:
        env = BFCLEnv(FS, ["GorillaFileSystem"])
        for i in range(1500):
            env.execute([Call("mkdir", {"dir_name": f"d{i}"}), Call("cd", {"folder": f"d{i}"})])
        return env

    a, b = deep(), deep()
    with pytest.raises(StateTooLarge, match="deeper than"):
        a.snapshot()
    assert a.success(b, [], []) is False  # too deep to compare: not the same state, and no RecursionError escapes
    b.execute("[touch(file_name='x')]")
    assert a.same_state(b) is False


def test_ordinary_states_are_unchanged():
    env = BFCLEnv(FS, ["GorillaFileSystem"])
    env.execute("[mkdir(dir_name='a'), cd(folder='a'), touch(file_name='b.txt')]")
    snap = env.snapshot()
    assert "a" in str(snap) and "b.txt" in str(snap)
    twin = BFCLEnv(FS, ["GorillaFileSystem"])
    twin.execute("[mkdir(dir_name='a'), cd(folder='a'), touch(file_name='b.txt')]")
    assert env.same_state(twin) and env.success(twin, [], [])
