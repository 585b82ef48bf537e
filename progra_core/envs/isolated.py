"""Env work that cannot outlive its budget, whatever it runs: envs live in a worker process the
caller can kill.

The watchdog of :mod:`progra_core.envs.budget` interrupts Python-level loops, but an exception
cannot stop one long C operation (big-integer or ``Decimal`` arithmetic, a regex, a deep compare),
and argument guards only cover the methods someone thought of. Here the envs a thread builds live
in one worker process (a fresh interpreter, ~0.1 s to start, once per thread); the caller sends each parsed call and waits at most the call's
budget plus :data:`GRACE_SECONDS`. A worker that does not answer in time (or dies) is killed,
a fresh one is started, and every env that lived in it is rebuilt by replaying, in order, the
calls it had answered: the call that ran over becomes an error observation with the state as it
was before it, exactly as the in-process budget reports a Python-level overrun. State reads
(``snapshot``, ``same_state``, ``success``) get the same bound.

Model output stays data: a worker receives :class:`~progra_core.calls.Call` objects and method
names of this module's own protocol, never text to run. Why a worker per thread and not per env:
an episode compares two envs (the policy's and the ground truth's twin), which must then live in
one process, and a call costs one pipe round trip either way (``make bench``: the env rows).
"""

from __future__ import annotations

import atexit
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from progra_core.calls import Call
from progra_core.envs import budget, registry
from progra_core.envs.base import EnvError, StateTooLarge, parse_step

__all__ = ["IsolatedEnv", "WorkerStopped", "GRACE_SECONDS", "MAKE_SECONDS", "live_workers", "stop_workers"]

#: what a worker gets beyond an operation's own budget (pickling, the pipe, the watchdog's poll)
GRACE_SECONDS = 1.0
#: building an env (a scenario config loaded into fresh class instances; τ²'s first import)
MAKE_SECONDS = 60.0
#: the budgets a worker takes from its caller at each env it builds
BUDGETS = ("CALL_SECONDS", "ACTION_SECONDS", "EPISODE_SECONDS", "STATE_SECONDS", "MAX_STATE_NODES", "MAX_STATE_DEPTH",
           "MAX_OBSERVATION_CHARS")


class WorkerStopped(EnvError):
    """The worker had to be stopped (an operation ran past its budget, or the process died)."""


# -- the worker process ---------------------------------------------------------------------------

def _serve(conn) -> None:
    """A worker's loop: envs by handle; one answer per request (``drop`` has none)."""
    envs: dict[int, Any] = {}
    while True:
        try:
            op, handle, payload = conn.recv()
        except (EOFError, OSError):
            return
        if op == "drop":
            envs.pop(handle, None)
            continue
        try:
            if op == "make":
                kind, classes, config, long_context, budgets, plugin = payload
                for name, value in budgets.items():  # the caller's budgets (a test or a config may shorten them)
                    setattr(budget, name, value)
                if plugin:  # a kind the caller's config named by import path: load it here the same way
                    registry.use(kind, plugin)
                envs[handle] = registry.build(kind, classes, config, long_context)
                value = None
            elif op == "call":
                name, args, kwargs = payload
                value = getattr(envs[handle], name)(*args, **kwargs)
            elif op == "pair":  # a method that takes another env of this worker as its first argument
                name, other, args, kwargs = payload
                value = getattr(envs[handle], name)(envs[other], *args, **kwargs)
            elif op == "clock":
                value = getattr(envs[handle].clock, payload)()
            elif op == "get":
                value = getattr(envs[handle], payload)
            else:
                raise ValueError(f"unknown operation {op!r}")
            answer = (True, value)
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
            answer = (False, e)
        try:
            conn.send(answer)
        except Exception as e:  # an answer that does not pickle
            conn.send((False, EnvError(f"the env's answer cannot be sent back: {type(e).__name__}: {e}")))


class _Worker:
    """One process and the proxies whose envs live in it. Thread-safe: a proxy may be used from
    another thread than the one that built it (one request at a time)."""

    def __init__(self):
        self._lock = threading.RLock()
        self._handles = itertools.count()
        self._envs: weakref.WeakValueDictionary[int, IsolatedEnv] = weakref.WeakValueDictionary()
        self._drops: list[int] = []
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        """A fresh interpreter (``python -m progra_core.envs.isolated FD``, ~0.1 s) talking over a
        socket pair: not a fork of this process, whose torch threads and locks a fork would copy."""
        mine, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = subprocess.Popen([sys.executable, "-m", "progra_core.envs.isolated", str(theirs.fileno())],
                                      pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      env=env, close_fds=True)
        theirs.close()
        self._conn = Connection(mine.detach())

    def _kill(self) -> None:
        self._proc.kill()
        self._proc.wait(5)
        self._conn.close()

    def close(self) -> None:
        with self._lock:
            if self.alive:
                self._kill()

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def drop(self, handle: int) -> None:
        self._drops.append(handle)  # sent before the next request (a finalizer must not block)

    def register(self, env: IsolatedEnv) -> int:
        handle = next(self._handles)
        self._envs[handle] = env
        return handle

    def ask(self, op: str, handle: int, payload: Any, seconds: float) -> Any:
        """The answer to one request, or :class:`WorkerStopped` after ``seconds`` + grace (the
        worker is then replaced and its envs rebuilt, see :meth:`_restart`)."""
        with self._lock:
            try:
                while self._drops:
                    self._conn.send(("drop", self._drops.pop(), None))
                self._conn.send((op, handle, payload))
                ready = self._conn.poll(seconds + GRACE_SECONDS)
                answer = self._conn.recv() if ready else None
            except (EOFError, OSError, BrokenPipeError) as e:
                self._restart()
                raise WorkerStopped(f"{budget.MARK}the env's worker process died ({type(e).__name__})") from None
            if answer is None:
                self._restart()
                raise WorkerStopped(f"{budget.MARK}the operation ran past its {seconds:g} s budget; its worker was stopped")
            ok, value = answer
            if not ok:
                raise value
            return value

    def _restart(self) -> None:
        """Kill, start a fresh process, rebuild every live env by replaying what it had answered.
        An env whose replay fails (it should not: those calls returned before) is marked broken,
        and so is every env if the rebuild itself had to be stopped."""
        self._kill()
        self.restarts += 1
        self._drops.clear()
        self._start()
        for handle, env in sorted(self._envs.items()):
            try:
                env._rebuild(self, handle)
            except WorkerStopped as e:  # the fresh process was stopped too: nothing in it is trustworthy
                for other in self._envs.values():
                    other._broken = str(e)
                return
            except Exception as e:  # noqa: BLE001
                env._broken = f"{budget.MARK}the env could not be rebuilt after its worker was stopped: {e}"


#: each thread's worker, keyed by the thread object: a thread id is reused once its thread ends, and
#: a new thread must not inherit a dead one's worker (started with another sys.path, other plugins)
_workers: dict[threading.Thread, _Worker] = {}
_workers_lock = threading.Lock()


def _worker_for_thread() -> _Worker:
    """This thread's worker (started on first use). Workers of threads that ended and hold no env
    are closed here."""
    me = threading.current_thread()
    with _workers_lock:
        for t, w in list(_workers.items()):
            if not t.is_alive() and not len(w._envs):
                w.close()
                del _workers[t]
        if me not in _workers:
            _workers[me] = _Worker()
        return _workers[me]


def live_workers() -> int:
    """Worker processes alive in this process (tests and the bench read it)."""
    with _workers_lock:
        return sum(w.alive for w in _workers.values())


@atexit.register
def stop_workers() -> None:
    """Close every worker (at exit too: a worker also ends by itself when its socket closes)."""
    with _workers_lock:
        for w in _workers.values():
            w.close()
        _workers.clear()


# -- the proxy ------------------------------------------------------------------------------------

class IsolatedEnv:
    """An :class:`~progra_core.envs.base.Env` whose instance lives in this thread's worker process
    (see the module docstring). Same methods and observations as the env it wraps."""

    def __init__(self, kind: str | None, involved_classes: Sequence[str], initial_config: Any = None,
                 long_context: bool = False):
        self._kind = registry.get(kind)
        self.name = self._kind.name
        self.involved_classes = list(involved_classes)
        self.domain = self.involved_classes[0] if self.name == "tau2" and self.involved_classes else None
        self._spec = (kind, self.involved_classes, initial_config, long_context)
        self._replay: list[tuple[str, tuple, dict]] = []  # answered calls, in order
        self._broken: str | None = None
        self._action_end: float | None = None  # the action's deadline, kept here: a restart starts a fresh clock there
        self._cache: dict[tuple, Any] = {}
        self._worker = _worker_for_thread()
        self._handle = self._worker.register(self)
        self._make(self._worker, self._handle)
        weakref.finalize(self, self._worker.drop, self._handle)

    def _make(self, worker: _Worker, handle: int) -> None:
        budgets = {name: getattr(budget, name) for name in BUDGETS}
        worker.ask("make", handle, (*self._spec, budgets, registry.origin(self._spec[0])), MAKE_SECONDS)

    def _rebuild(self, worker: _Worker, handle: int) -> None:
        self._make(worker, handle)
        for name, args, kwargs in self._replay:
            seconds = budget.CALL_SECONDS if name == "execute_one" else budget.STATE_SECONDS
            worker.ask("call", handle, (name, args, kwargs), seconds)

    def _ask(self, op: str, payload: Any, seconds: float) -> Any:
        if self._broken:
            raise WorkerStopped(self._broken)
        return self._worker.ask(op, self._handle, payload, seconds)

    def _call(self, name: str, *args, seconds: float | None = None, **kwargs) -> Any:
        return self._ask("call", (name, args, kwargs), budget.CALL_SECONDS if seconds is None else seconds)

    def _static(self, name: str, *args, **kwargs) -> Any:
        """A read that does not change with the episode (docs, scenario): asked once."""
        key = (name, args, tuple(sorted(kwargs.items())))
        if key not in self._cache:
            self._cache[key] = self._call(name, *args, **kwargs)
        return self._cache[key]

    # -- the Env protocol ------------------------------------------------------------------------

    def tools(self, *args, **kwargs) -> list[dict]:
        return self._static("tools", *args, **kwargs)

    def scenario(self) -> str:
        return self._static("scenario")

    def resolve(self, call: Call, *args, **kwargs) -> Call:
        try:
            return self._call("resolve", call, *args, **kwargs)
        except WorkerStopped:
            return call

    def execute_one(self, call: Call, *args, **kwargs) -> str:
        """One call; past its budget (or in a broken env) an error observation, and the call is
        recorded in the env's history as a failed one (:meth:`record_stopped` of the env)."""
        prefix = self._kind.error_prefix
        if self._broken:
            return f"{prefix}{self._broken}"
        wait = budget.CALL_SECONDS
        if self._action_end is not None:
            left = self._action_end - time.monotonic()
            if left <= 0:
                return self._record(call, f"{prefix}{budget.MARK}this action's {budget.ACTION_SECONDS:g} s budget is spent",
                                    0.0, args, kwargs)
            wait = min(wait, left)
        try:
            obs = self._call("execute_one", call, *args, seconds=wait, **kwargs)
        except WorkerStopped as e:
            if self._action_end is not None:
                self._clock("start_action")  # the fresh process is inside this action too
            return self._record(call, f"{prefix}{e}", wait, args, kwargs)
        self._replay.append(("execute_one", (call, *args), kwargs))
        return obs

    def _record(self, call: Call, obs: str, seconds: float, args: tuple, kwargs: dict) -> str:
        """A call answered here, not by the env: recorded in the env as a failed call."""
        entry = ("record_stopped", (call, obs, seconds, *args), kwargs)
        try:
            self._ask("call", entry, budget.CALL_SECONDS)
        except WorkerStopped as again:
            self._broken = str(again)
            return obs
        self._replay.append(entry)
        return obs

    def execute(self, calls: Sequence[Call] | str, *args, **kwargs) -> list[str]:
        calls, error = parse_step(calls)
        if error:
            return [error]
        self._action_end = time.monotonic() + budget.ACTION_SECONDS
        self._clock("start_action")
        try:
            return [self.execute_one(c, *args, **kwargs) for c in calls]
        finally:
            self._action_end = None
            self._clock("end_action")

    def _clock(self, what: str) -> None:
        """The env's action clock; once more after a restart (the rebuilt env), then broken."""
        for attempt in (0, 1):
            if self._broken:
                return
            try:
                self._ask("clock", what, budget.CALL_SECONDS)
                return
            except WorkerStopped as e:
                if attempt:
                    self._broken = str(e)

    def snapshot(self) -> dict[str, Any]:
        """The env's state; :class:`~progra_core.envs.bfcl.StateTooLarge` when reading it ran
        past ``STATE_SECONDS`` (or the env is broken)."""
        try:
            return self._call("snapshot", seconds=budget.STATE_SECONDS)
        except WorkerStopped as e:
            raise StateTooLarge(str(e)) from None

    def _pair(self, name: str, other: IsolatedEnv, *args) -> Any:
        """``name(other, *args)`` on this env; ``other`` is first copied into this env's worker
        when it lives in another one (its calls replayed)."""
        if not isinstance(other, IsolatedEnv):
            raise TypeError(f"an isolated env compares with another isolated env, got {type(other).__name__}")
        if other._broken:
            raise WorkerStopped(other._broken)
        twin = other if other._worker is self._worker else other._copy_into(self._worker)
        return self._ask("pair", (name, twin._handle, args, {}), budget.STATE_SECONDS)

    def _copy_into(self, worker: _Worker) -> IsolatedEnv:
        twin = object.__new__(IsolatedEnv)
        twin.__dict__.update({k: v for k, v in self.__dict__.items() if k not in ("_worker", "_handle", "_cache")})
        twin._replay, twin._cache, twin._worker = list(self._replay), {}, worker
        twin._handle = worker.register(twin)
        twin._rebuild(worker, twin._handle)
        weakref.finalize(twin, worker.drop, twin._handle)
        return twin

    def same_state(self, other: IsolatedEnv) -> bool:
        try:
            return bool(self._pair("same_state", other))
        except WorkerStopped:
            return False

    def success(self, target: IsolatedEnv, expected: Sequence[str] = (), observed: Sequence[str] = ()) -> bool:
        try:
            return bool(self._pair("success", target, list(expected), list(observed)))
        except WorkerStopped:
            return False

    # -- what some callers read besides the protocol ----------------------------------------------

    @property
    def history(self) -> list[tuple[Call, str]]:
        return self._ask("get", "history", budget.CALL_SECONDS)

    @property
    def log(self) -> list:
        """τ²: (ToolCall, ToolMessage) per call, for the transcript."""
        return self._ask("get", "log", budget.CALL_SECONDS)

    @property
    def errors(self) -> int:
        return self._ask("get", "errors", budget.CALL_SECONDS)

    def assertions_met(self, task) -> bool:
        try:
            return bool(self._call("assertions_met", task, seconds=budget.STATE_SECONDS))
        except WorkerStopped:
            return False

    def __repr__(self) -> str:
        return f"IsolatedEnv({self.name}, {self.involved_classes}, handle={self._handle})"


if __name__ == "__main__":  # a worker: serve the socket whose descriptor the parent passed
    _serve(Connection(int(sys.argv[1])))
