"""One execution budget for every environment call, and each call in its own arithmetic context.

A policy (in RL or evaluation) or a record (ingest replays ground truth) can emit a short call
that never returns, or one that changes the process for every later env. Every env's
``execute_one`` runs the method through :func:`run_call`, which

* **bounds its time** (:data:`CALL_SECONDS`): one watchdog thread for the process keeps the
  deadlines of the calls in flight and raises :class:`CallBudgetExceeded` inside a call's thread
  when it passes (``PyThreadState_SetAsyncExc``). That interrupts Python-level loops (MessageAPI's
  id generator over a config where every id is taken); it cannot interrupt one long C operation,
  so for those the **arguments are guarded** before the call (:func:`guard_arguments`):
  ``MathAPI.power`` whose integer result would exceed :data:`MAX_RESULT_BITS`, and
  ``MathAPI.logarithm`` / ``square_root`` with a ``precision`` above :data:`MAX_PRECISION` digits;
  any integer argument above :data:`MAX_INT_BITS` is refused for every class;
* **bounds its result** (:data:`MAX_OBSERVATION_CHARS` of observation);
* **leaves the process as it found it**: a call of a class that sets arithmetic precision
  (:data:`ARITHMETIC`) runs inside its own ``decimal`` context (per thread) and under one lock
  with ``mpmath``'s precision saved and restored (mpmath's context is process-wide), and
  module-level values a class is known to write
  (:data:`MODULE_STATE`, e.g. VehicleControl's long-context weather dict) are restored after it.

A call over budget becomes an error observation (and, in ingest, a reject); it never hangs the run.
Python threads cannot be killed, so a budget enforced by an exception is the in-process limit;
the argument guards cover what that cannot reach.
"""

from __future__ import annotations

import copy
import ctypes
import decimal
import importlib
import itertools
import math
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from progra_core.calls import MAX_INT_BITS  # the parser's own limit: a Call from a record meets the same one

__all__ = ["CallBudgetExceeded", "run_call", "timed", "guard_arguments", "CALL_SECONDS", "ACTION_SECONDS", "EPISODE_SECONDS",
           "MAX_STATE_NODES", "MAX_STATE_DEPTH", "STATE_SECONDS", "Clock", "MAX_PRECISION", "MAX_RESULT_BITS",
           "MAX_INT_BITS", "MAX_OBSERVATION_CHARS", "MODULE_STATE", "ARITHMETIC", "MARK", "budget_error"]

CALL_SECONDS = 5.0  # BFCL/τ² methods take microseconds to milliseconds
ACTION_SECONDS = 10.0  # all calls of one action together (a list of 40 slow calls is one action)
EPISODE_SECONDS = 60.0  # all calls of one env instance together
MAX_STATE_NODES = 200_000  # values a state walk (snapshot) may visit: real BFCL states have hundreds
MAX_STATE_DEPTH = 200  # nesting a state walk may follow (1,500 nested mkdirs overflowed Python's stack)
STATE_SECONDS = CALL_SECONDS  # one state comparison (same_state)
MAX_PRECISION = 1000  # digits for MathAPI's mpmath / decimal precision arguments
MAX_RESULT_BITS = 1 << 16  # an integer power's result (~19,700 decimal digits)
MAX_OBSERVATION_CHARS = 1 << 20

#: (class, module, global name): module-level values a class's methods write (found by reading
#: the sources; ``tests/reliability/test_hostile.py`` scans bfcl-eval for new ones).
MODULE_STATE: tuple[tuple[str, str, str], ...] = (
    ("VehicleControlAPI", "bfcl_eval.eval_checker.multi_turn_eval.func_source_code.long_context", "LONG_WEATHER_EXTENSION"),
)


#: how an observation of a call refused or stopped by the budget begins (after the env's own
#: error prefix), so ingest can tell it from an ordinary failing call
MARK = "budget: "


def budget_error(observation: str) -> bool:
    return MARK in observation[:64]


class CallBudgetExceeded(BaseException):
    """Raised inside a call that ran past its budget (a BaseException so that a method's own
    ``except Exception`` cannot swallow it)."""


# -- the watchdog -------------------------------------------------------------------------------
# A call registers (deadline, thread) in a dict (no lock: one GIL-atomic store) and the watchdog
# polls it every POLL_SECONDS; only firing and release take the lock, so a call costs ~1 µs.

POLL_SECONDS = 0.05
_lock = threading.Lock()
_active: dict[int, tuple[float, int]] = {}  # token -> (deadline, thread id)
_fired: set[int] = set()
_tokens = itertools.count()
_watchdog: threading.Thread | None = None
_set_async = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async.argtypes = (ctypes.c_ulong, ctypes.py_object)


def _watch() -> None:
    while True:
        time.sleep(POLL_SECONDS)
        now = time.monotonic()
        for token, (deadline, tid) in list(_active.items()):
            if now >= deadline:
                with _lock:
                    if token in _active and token not in _fired:
                        _fired.add(token)
                        _set_async(tid, ctypes.py_object(CallBudgetExceeded))


def _start_watchdog() -> None:
    global _watchdog
    with _lock:
        if _watchdog is None:
            _watchdog = threading.Thread(target=_watch, name="progra-env-budget", daemon=True)
            _watchdog.start()


def _register(seconds: float) -> tuple[int, float]:
    if _watchdog is None:
        _start_watchdog()
    token, deadline = next(_tokens), time.monotonic() + seconds
    _active[token] = (deadline, threading.get_ident())
    return token, deadline


def _release(token: int, deadline: float) -> bool:
    """Deregister; True when the watchdog fired for it (an exception still pending is cleared).
    Released before its deadline, a call cannot have been fired at (the watchdog fires only past
    the deadline, under the lock, and only while the token is registered), so no lock is taken."""
    _active.pop(token, None)
    if time.monotonic() < deadline:
        return False
    with _lock:
        if token not in _fired:
            return False
        _fired.discard(token)
        _set_async(threading.get_ident(), ctypes.py_object())  # NULL: drop one not yet delivered
    return True


# -- argument guards --------------------------------------------------------------------------------

def _big_int(v: Any) -> bool:
    t = type(v)
    if t is str or t is float or t is bool or v is None:
        return False
    if t is int:
        return v.bit_length() > MAX_INT_BITS
    if isinstance(v, (list, tuple, set)):
        return any(_big_int(x) for x in v)
    if isinstance(v, dict):
        return any(_big_int(x) for x in v.values())
    return False


def guard_arguments(cls: str, method: str, args: dict[str, Any], positional: tuple = (),
                    bind: Callable[[], dict[str, Any]] | None = None) -> str | None:
    """Why this call cannot run within the budget, or None. ``bind`` gives the arguments by
    parameter name (only the guarded methods need it)."""
    for v in (*args.values(), *positional):
        if type(v) is not str and _big_int(v):
            return f"an integer argument has more than {MAX_INT_BITS} bits"
    if cls == "MathAPI" and method in ("logarithm", "square_root", "power"):
        args = bind() if bind is not None and positional else args
        p = args.get("precision")
        if method in ("logarithm", "square_root") and isinstance(p, (int, float)) and not isinstance(p, bool) and \
                (p != p or abs(p) > MAX_PRECISION):
            return f"precision {p} is above the limit of {MAX_PRECISION} digits"
        if method == "power":
            b, e = args.get("base"), args.get("exponent")
            if isinstance(b, int) and isinstance(e, int) and not isinstance(b, bool) and not isinstance(e, bool) \
                    and abs(b) > 1 and e > 0 and e * math.log2(abs(b)) > MAX_RESULT_BITS:
                return f"the result would have more than {MAX_RESULT_BITS} bits"
    return None


# -- one call ---------------------------------------------------------------------------------------

_math_lock = threading.RLock()  # mpmath's precision is one process-wide setting
_module_values: dict[tuple[str, str], Any] = {}
_WRITERS = frozenset(c for c, _, _ in MODULE_STATE)
_recorded: set[str] = set()
#: classes whose methods set the decimal context or mpmath's precision (the test scans for others)
ARITHMETIC = frozenset({"MathAPI"})


def _restore_modules(cls: str) -> None:
    for c, mod, name in MODULE_STATE:
        if c != cls:
            continue
        key = (mod, name)
        module = importlib.import_module(mod)
        if key not in _module_values:
            _module_values[key] = copy.deepcopy(getattr(module, name))
            continue
        value, pristine = getattr(module, name), _module_values[key]
        if value != pristine:
            if isinstance(value, dict):
                value.clear()
                value.update(copy.deepcopy(pristine))
            elif isinstance(value, list):
                value[:] = copy.deepcopy(pristine)
            else:
                setattr(module, name, copy.deepcopy(pristine))


def _timed(fn: Callable[[], Any], seconds: float) -> Any:
    """``fn()`` registered with the watchdog; :class:`CallBudgetExceeded` when it was fired at."""
    token, deadline = _register(seconds)
    try:
        try:
            return fn()
        finally:
            fired, token = _release(token, deadline), None
            if fired:
                raise CallBudgetExceeded
    except CallBudgetExceeded:
        if token is not None:  # delivered before the release above ran
            _release(token, deadline)
        raise CallBudgetExceeded(f"{MARK}the call ran past its {seconds:g} s budget") from None


timed = _timed


class Clock:
    """An env instance's time left: each call gets the least of its own budget, what is left of the
    action it belongs to and what is left of the episode, so no list of calls and no long episode
    outlives its budget however many calls it holds."""

    def __init__(self, episode: float | None = None):
        self.episode_left = EPISODE_SECONDS if episode is None else episode
        self.action_end: float | None = None

    def start_action(self) -> None:
        self.action_end = time.monotonic() + ACTION_SECONDS

    def end_action(self) -> None:
        self.action_end = None

    def allowance(self) -> tuple[float, str | None]:
        """(seconds the next call may take, why none if that is 0)."""
        left = [(CALL_SECONDS, None), (self.episode_left, "the episode's")]
        if self.action_end is not None:
            left.append((self.action_end - time.monotonic(), "this action's"))
        seconds, which = min(left, key=lambda x: x[0])
        if seconds <= 0:
            total = EPISODE_SECONDS if which == "the episode's" else ACTION_SECONDS
            return 0.0, f"{MARK}{which} {total:g} s budget is spent"
        return seconds, None

    def spend(self, seconds: float) -> None:
        self.episode_left -= seconds


def run_call(cls: str, fn: Callable[[], Any], seconds: float | None = None) -> Any:
    """``fn()`` within the budget and its own arithmetic context; :class:`CallBudgetExceeded`
    when it runs past ``seconds`` (default :data:`CALL_SECONDS`)."""
    seconds = CALL_SECONDS if seconds is None else seconds
    writes, arithmetic = cls in _WRITERS, cls in ARITHMETIC
    if not (writes or arithmetic):  # the common case: no state to guard
        return _timed(fn, seconds)
    if writes and cls not in _recorded:
        _restore_modules(cls)  # the first use records the pristine values
        _recorded.add(cls)
    mpmath = _mpmath() if arithmetic else None
    with (decimal.localcontext() if arithmetic else nullcontext()), (_math_lock if mpmath else nullcontext()):
        prec = mpmath.mp.prec if mpmath else None
        try:
            return _timed(fn, seconds)
        finally:
            if mpmath:
                mpmath.mp.prec = prec
            if writes:
                _restore_modules(cls)


def _mpmath():
    try:
        import mpmath
    except ImportError:
        return None
    return mpmath
