"""Code versions and input digests: what of the code and the inputs enters a dataset's fingerprint.

A stage's code version is its declared number plus a digest of every ``progra_core`` module it
imports, transitively (imports inside functions and the packages on the way included), and of the
installed versions of the third-party distributions that closure imports. Nobody lists modules by
hand, so an edit to a helper two imports away (``calls.schema_equal`` under verify, ``train/sft.py``
under grpo) changes the version of every stage that runs it, and of no other. Modules are hashed
by their syntax tree, so comments and formatting do not invalidate datasets; any change to code,
strings or docstrings does.

Input files are hashed by content, streamed, and only their regular-file bytes: a FIFO, a device or
a link that dangles is reported as unreadable instead of read (a never-ending input cannot hang a
fingerprint). A file whose (device, inode, size, mtime, ctime) is unchanged, and was last changed
more than two seconds earlier, is not hashed twice in one process.
"""

from __future__ import annotations

import ast
import hashlib
import os
import stat
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType

__all__ = ["code_version", "closure", "third_party", "file_digest", "digest_or_reason", "tree_digest", "Unreadable", "PACKAGE", "ROOT"]

PACKAGE = "progra_core"
#: the folder that holds the ``progra_core`` package
ROOT = Path(__file__).resolve().parents[1]


class Unreadable(OSError):
    """An input that is not a regular file that can be read to its end."""


# -- the import closure -------------------------------------------------------------------------

def _file(name: str, root: Path) -> Path | None:
    """Source file of ``progra_core.a.b`` under ``root`` (module or package), without importing it."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _parsed(path: Path) -> tuple[str, tuple[tuple[int, str, tuple[str, ...]], ...]]:
    """(digest of the module's syntax tree, its imports anywhere as (level, module, names))."""
    st = path.stat()
    return _parsed_at(path, st.st_size, st.st_mtime_ns, st.st_ino)


@cache
def _parsed_at(path: Path, size: int, mtime_ns: int, inode: int) -> tuple[str, tuple[tuple[int, str, tuple[str, ...]], ...]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    imports: list[tuple[int, str, tuple[str, ...]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports += [(0, a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            imports.append((node.level, node.module or "", tuple(a.name for a in node.names if a.name != "*")))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest(), tuple(imports)


def _imported(name: str, path: Path) -> list[str]:
    """The absolute module names module ``name`` (at ``path``) imports; relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[str] = []
    for level, module, names in _parsed(path)[1]:
        if level:
            anchor = package.split(".")
            anchor = anchor[:len(anchor) - (level - 1)]
            module = ".".join([*anchor, module] if module else anchor)
        out.append(module)
        out += [f"{module}.{n}" for n in names]
    return out


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(*modules: str | ModuleType, root: Path | None = None) -> tuple[list[str], list[str]]:
    """(the ``progra_core`` modules these import transitively, sorted; the top-level names of
    the other packages that closure imports). A module counts with its parent packages, whose
    ``__init__`` runs on import; a name that is an attribute rather than a submodule is skipped."""
    root = Path(root or ROOT)
    todo = [m.__name__ if isinstance(m, ModuleType) else m for m in modules]
    seen: set[str] = set()
    outside: set[str] = set()
    while todo:
        name = todo.pop()
        for n in (*_parents(name), name):
            if n in seen or n in outside:
                continue
            path = _file(n, root)
            if path is None:
                if n.split(".")[0] != PACKAGE:
                    outside.add(n.split(".")[0])
                continue
            seen.add(n)
            todo += _imported(n, path)
    return sorted(seen), sorted(outside - set(sys.stdlib_module_names) - {"__future__", PACKAGE})


@cache
def _distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()


def third_party(packages: list[str]) -> dict[str, str]:
    """``{distribution: installed version}`` for these top-level import names (missing ones
    count as ``missing``: a stage whose optional package is absent behaves differently)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for top in packages:
        for dist in _distributions().get(top, [top]):
            try:
                out[dist] = version(dist)
            except PackageNotFoundError:
                out[dist] = "missing"
    return dict(sorted(out.items()))


def code_version(version: str, *modules: str | ModuleType, root: Path | None = None) -> str:
    """``<version>+<digest>`` over the transitive ``progra_core`` import closure of ``modules``
    (each by its syntax tree) and the versions of the third-party distributions it imports."""
    root = Path(root or ROOT)
    inside, outside = closure(*modules, root=root)
    h = hashlib.sha256(version.encode())
    for name in inside:
        h.update(f"\0{name}\0{_parsed(_file(name, root))[0]}".encode())  # type: ignore[arg-type]
    for dist, v in third_party(outside).items():
        h.update(f"\0{dist}=={v}".encode())
    return f"{version}+{h.hexdigest()[:10]}"


# -- input digests ------------------------------------------------------------------------------

_DIGESTS: dict[tuple, str] = {}


def _regular(path: str | os.PathLike) -> os.stat_result:
    try:
        st = os.stat(path)  # follows links: a dangling one raises here
    except OSError as e:
        raise Unreadable(f"{path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a pipe, a device or a socket)"
        raise Unreadable(f"{path} is {kind}")
    return st


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a regular file's bytes (streamed, at most its size at open: a file still growing
    cannot make it loop); :class:`Unreadable` for anything else. Remembered per (device, inode,
    size, mtime) for this process."""
    st = _regular(path)
    sig = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if sig in _DIGESTS:
        return _DIGESTS[sig]
    # file clocks tick coarsely (milliseconds): a file changed within the last seconds may change
    # again under the same signature, so its digest is not remembered (git's "racy" rule)
    settled = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > 2_000_000_000
    h = hashlib.sha256()
    left = st.st_size
    try:
        with open(path, "rb") as f:
            while left > 0 and (block := f.read(min(chunk, left))):
                h.update(block)
                left -= len(block)
    except OSError as e:
        raise Unreadable(f"{path}: {e.strerror or e}") from None
    digest = h.hexdigest()[:16]
    if settled:
        _DIGESTS[sig] = digest
    return digest


def digest_or_reason(path: str | os.PathLike) -> str:
    """:func:`file_digest`, or ``unreadable: <why>`` (a fingerprint stays defined for any input)."""
    try:
        return file_digest(path)
    except Unreadable as e:
        return f"unreadable: {e}"


def tree_digest(folder: str | os.PathLike, *, skip_hidden: bool = True,
                content: Callable[[str], str] = digest_or_reason) -> dict[str, str]:
    """``{relative path: content(path)}`` for every file under ``folder`` (by default its content
    digest or why it is unreadable; links followed to their target's bytes, never into a loop;
    hidden names skipped when asked)."""
    out: dict[str, str] = {}
    for d, dirs, files in os.walk(folder):
        dirs[:] = sorted(x for x in dirs if not (skip_hidden and x.startswith(".")))
        for name in sorted(files):
            if not (skip_hidden and name.startswith(".")):
                p = os.path.join(d, name)
                out[os.path.relpath(p, folder)] = content(p)
    return out
