"""Code versions for dataset fingerprints: a stage's declared version plus a hash of its source,
so editing a stage's code invalidates its cached datasets even if nobody bumps the number."""

from __future__ import annotations

import hashlib
import inspect
from types import ModuleType


def code_version(version: str, *modules: ModuleType) -> str:
    h = hashlib.sha256(version.encode())
    for m in modules:
        h.update(inspect.getsource(m).encode())
    return f"{version}+{h.hexdigest()[:10]}"


def file_digest(path: str, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (for inputs that enter a fingerprint)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]
