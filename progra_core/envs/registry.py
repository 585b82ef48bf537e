"""Environment kinds, registered by name: what a ``trajectories`` row's ``env`` column may say.

An :class:`EnvKind` says how to build one episode's env from a row's ``involved_classes`` and
``initial_config``, which rows it can build (``check``), and how a failing call's observation
starts. Every part of the pipeline that runs calls (synthesis, verification's argument resolver,
PAG-RL rollouts, evaluation, the killable worker process) finds an env through :func:`get`, so a new
environment is one module that makes an ``EnvKind``, found by name:

1. the registered kinds (BFCL and τ² are built in; their modules load on first use);
2. kinds the user's config names by import path (``envs: {shop: "my_envs.shop:KIND"}``), loaded
   by :func:`use`: a file of the user's, nothing to install;
3. entry points of the ``progra.envs`` group (an installed plugin package).

A name in a data row is only ever looked up, never imported: a JSONL record cannot make progra
import a module. The modules the config or an installed package name are user code and trusted as
such. The worker process of :mod:`progra_core.envs.isolated` is told where a config-named kind
comes from (:func:`origin`) and loads it the same way."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from progra_core.envs.base import Env, EnvError

__all__ = ["EnvKind", "register", "use", "origin", "get", "names", "check", "build", "DEFAULT", "ENTRY_POINTS"]

DEFAULT = "bfcl"  #: what a row with no ``env`` means
ENTRY_POINTS = "progra.envs"
#: built-in kinds and the module that registers each (imported only when the kind is first asked for)
_BUILTIN = {"bfcl": "progra_core.envs.bfcl", "tau2": "progra_core.envs.tau2"}


def _any(involved_classes: Sequence[str]) -> None:
    return None


@dataclass(frozen=True)
class EnvKind:
    name: str  #: the ``env`` value of its rows
    help: str  #: what ``involved_classes`` and ``initial_config`` mean for it
    build: Callable[[Sequence[str], Any, bool], Env]  #: ``(involved_classes, initial_config, long_context)`` -> a fresh env
    check: Callable[[Sequence[str]], None] = _any  #: an ``EnvError`` for ``involved_classes`` it cannot build
    error_prefix: str = "Error: "  #: how its observation of a failing call starts


_KINDS: dict[str, EnvKind] = {}
_ORIGINS: dict[str, str] = {}  #: name -> "module:attribute" of the kinds loaded by :func:`use`


def register(kind: EnvKind) -> EnvKind:
    """Make ``kind`` available by its name (a module calls this once, at import)."""
    if not kind.name or ":" in kind.name:
        raise ValueError(f"an env kind's name is a plain word, got {kind.name!r}")
    _KINDS[kind.name] = kind
    return kind


def use(name: str, ref: str) -> EnvKind:
    """Load the ``EnvKind`` at ``ref`` (``"module:attribute"``, named by the user's config) and
    register it as ``name``; a second call with the same pair is free."""
    if _ORIGINS.get(name) == ref:
        return _KINDS[name]
    if name in _BUILTIN:
        raise EnvError(f"env {name!r} is built in: give the plugin another name")
    kind = _load(ref)
    if kind.name != name:
        raise EnvError(f"envs.{name} names {ref!r}, whose EnvKind is called {kind.name!r}: use one name for both")
    _ORIGINS[name] = ref
    return register(kind)


def origin(name: str | None) -> str | None:
    """Where a config-named kind was loaded from (None for built-in, registered and installed kinds)."""
    return _ORIGINS.get(name or DEFAULT)


def _load(ref: str) -> EnvKind:
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise EnvError(f"an env plugin is named 'module:attribute', got {ref!r}")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise EnvError(f"env {ref!r}: cannot load {attr!r} from module {module!r} ({e})") from None
    if not isinstance(obj, EnvKind):
        raise EnvError(f"env {ref!r} is a {type(obj).__name__}, not an EnvKind (progra_core.envs.registry)")
    return obj


def get(name: str | None) -> EnvKind:
    """The kind a row's ``env`` names (None or "": BFCL); an :class:`EnvError` naming the known ones."""
    name = name or DEFAULT
    if not isinstance(name, str):
        raise EnvError(f"an env kind is a name, got a {type(name).__name__}")
    if name in _KINDS:
        return _KINDS[name]
    if name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
        return _KINDS[name]
    for ep in entry_points(group=ENTRY_POINTS):
        if ep.name == name:
            kind = ep.load()
            if not isinstance(kind, EnvKind):
                raise EnvError(f"entry point {ENTRY_POINTS}:{name} is a {type(kind).__name__}, not an EnvKind")
            _KINDS[name] = kind
            return kind
    raise EnvError(f"unknown env kind {str(name)[:60]!r}; known: {names()} (a plugin: name it in the config's envs)")


def names() -> list[str]:
    """The kinds known without importing user code: built in, registered, installed entry points."""
    return sorted(set(_BUILTIN) | set(_KINDS) | {ep.name for ep in entry_points(group=ENTRY_POINTS)})


def check(kind: str | None, involved_classes: Sequence[str]) -> EnvKind:
    """The kind, once it accepts ``involved_classes``; an :class:`EnvError` otherwise."""
    k = get(kind)
    k.check(involved_classes)
    return k


def build(kind: str | None, involved_classes: Sequence[str], initial_config: Any, long_context: bool = False) -> Env:
    """A fresh env of ``kind`` for one episode, in this process."""
    return check(kind, involved_classes).build(list(involved_classes), initial_config, long_context)
