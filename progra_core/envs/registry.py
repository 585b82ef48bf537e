"""Environment kinds, registered by name: what a ``trajectories`` row's ``env`` column may say.

An :class:`EnvKind` says how to build one episode's env from a row's ``involved_classes`` and
``initial_config``, which rows it can build (``check``), its tool docs when they do not depend on
the episode (``docs``), and how a failing call's observation starts. Every part of the pipeline
that runs calls (synthesis, verification's argument resolver, PAG-RL rollouts, evaluation, the
killable worker process) finds an env through :func:`get`, so a new environment needs no edit to
progra, found by name:

1. the registered kinds (BFCL and τ² are built in; their modules load on first use);
2. kinds the user's config names (``envs:`` section), loaded by :func:`use`: a Python class
   whose methods are the tools (``"my_envs/shop.py:Shop"`` or ``"my_envs.shop:Shop"``,
   :mod:`progra_core.envs.python_env`), an MCP server (``{"mcp": {...}}``,
   :mod:`progra_core.envs.mcp_env`), or an ``EnvKind`` object of the user's own;
3. entry points of the ``progra.envs`` group (an installed plugin package) naming an ``EnvKind``
   or a class.

A name in a data row is only ever looked up, never imported: a JSONL record cannot make progra
import a module or start a process. The modules and servers the config or an installed package
name are user code and trusted as such. The worker process of :mod:`progra_core.envs.isolated`
is told what a config-named kind was loaded from (:func:`origin`) and loads it the same way."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from progra_core.envs.base import Env, EnvError, EnvKind

__all__ = ["EnvKind", "register", "use", "origin", "get", "names", "docs", "check", "build", "identity", "DEFAULT", "ENTRY_POINTS"]

DEFAULT = "bfcl"  #: what a row with no ``env`` means
ENTRY_POINTS = "progra.envs"
#: built-in kinds and the module that registers each (imported only when the kind is first asked for)
_BUILTIN = {"bfcl": "progra_core.envs.bfcl", "tau2": "progra_core.envs.tau2"}


_KINDS: dict[str, EnvKind] = {}
_ORIGINS: dict[str, Any] = {}  #: name -> the config spec of the kinds loaded by :func:`use`


def register(kind: EnvKind) -> EnvKind:
    """Make ``kind`` available by its name (a module calls this once, at import)."""
    if not kind.name or ":" in kind.name:
        raise ValueError(f"an env kind's name is a plain word, got {kind.name!r}")
    _KINDS[kind.name] = kind
    return kind


def use(name: str, spec: Any) -> EnvKind:
    """Load the kind the user's config names as ``name`` and register it; a second call with the
    same pair is free. ``spec``: ``"module:attribute"`` or ``"path/to/file.py:attribute"`` (an
    ``EnvKind`` or a class whose methods are the tools), ``{"python": <the same>}``, or
    ``{"mcp": {command | url, ...}}`` (:class:`progra_core.envs.mcp_env.MCPSpec`)."""
    if _ORIGINS.get(name) == spec:
        return _KINDS[name]
    if name in _BUILTIN:
        raise EnvError(f"env {name!r} is built in: give the plugin another name")
    if isinstance(spec, dict) and set(spec) == {"mcp"}:
        from progra_core.envs.mcp_env import mcp_kind

        kind = mcp_kind(name, spec["mcp"])
    elif isinstance(spec, dict) and set(spec) == {"python"}:
        kind = _kind_of(name, _load(spec["python"]), spec["python"])
    elif isinstance(spec, str):
        kind = _kind_of(name, _load(spec), spec)
    else:
        raise EnvError(f"envs.{name}: give 'module:attribute', 'file.py:attribute', {{python: ...}} or {{mcp: {{...}}}}, "
                       f"got {str(spec)[:80]!r}")
    _ORIGINS[name] = spec
    return register(kind)


def _kind_of(name: str, obj: Any, ref: str) -> EnvKind:
    if inspect.isclass(obj):
        from progra_core.envs.python_env import python_kind

        return python_kind(name, obj)
    if not isinstance(obj, EnvKind):
        raise EnvError(f"env {ref!r} is a {type(obj).__name__}, not an EnvKind or a class")
    if obj.name != name:
        raise EnvError(f"envs.{name} names {ref!r}, whose EnvKind is called {obj.name!r}: use one name for both")
    return obj


def origin(name: str | None) -> Any:
    """What a config-named kind was loaded from (None for built-in, registered and installed kinds)."""
    return _ORIGINS.get(name or DEFAULT)


def _load(ref: str) -> Any:
    """The attribute ``ref`` names: ``module:attr`` imported, ``some/file.py:attr`` loaded from the file."""
    module, sep, attr = str(ref).rpartition(":")
    if not sep or not module or not attr:
        raise EnvError(f"an env plugin is named 'module:attribute' or 'file.py:attribute', got {ref!r}")
    try:
        if module.endswith(".py"):
            path = module
            module = "progra_env_" + "".join(ch if ch.isalnum() else "_" for ch in path)
            if module not in sys.modules:
                spec = importlib.util.spec_from_file_location(module, path)
                if spec is None or spec.loader is None:
                    raise ImportError(f"no such file {path!r}")
                mod = importlib.util.module_from_spec(spec)
                sys.modules[module] = mod
                try:
                    spec.loader.exec_module(mod)
                except BaseException:
                    del sys.modules[module]
                    raise
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, OSError, SyntaxError) as e:
        raise EnvError(f"env {ref!r}: cannot load {attr!r} from {module!r} ({type(e).__name__}: {e})") from None


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
            kind = _kind_of(name, ep.load(), f"entry point {ENTRY_POINTS}:{name}")
            _KINDS[name] = kind
            return kind
    raise EnvError(f"unknown env kind {str(name)[:60]!r}; known: {names()} (a plugin: name it in the config's envs)")


def docs(kind: str | None, involved_classes: Sequence[str]) -> list[dict] | None:
    """The tool docs of every episode of ``kind`` with these classes, when the kind knows them
    without an episode (plugin envs); None otherwise."""
    k = get(kind)
    return k.docs(involved_classes) if k.docs is not None else None


def identity(name: str | None) -> dict:
    """What a stage's fingerprint records of a kind: built-in kinds by name; a plugin by its
    config spec and the bytes of its source (the class's file, a stdio server's script files), so
    editing the plugin re-runs what it produced."""
    name = name or DEFAULT
    if name in _BUILTIN:
        return {"env": name}
    kind = get(name)
    files = [Path(f) for f in kind.sources if Path(f).is_file()]
    return {"env": name, "spec": origin(name), "sources": {str(f): hashlib.sha256(f.read_bytes()).hexdigest()[:16] for f in files}}


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
