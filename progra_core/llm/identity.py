"""What a ``local/`` model *is*, for cache keys: content digests of its weights and adapter, never
its name.

``local/policy`` and ``local/<model id>`` are aliases chosen by the caller; two different models can
carry the same alias in one storage root (switch ``models.policy``, retrain an adapter in place), and
a key on the alias would serve one model's answers to the other. The digest covers every file of the
model folder (weights, config, tokenizer, chat template) by content; files of a Hugging Face cache
snapshot are links to blobs named by their hash, so those names are used without reading the
blobs. Digests of plain files are remembered per (device, inode, size, mtime, ctime)
(:func:`progra_core.versioning.file_digest`), so a 16 GB checkpoint is read once per process and an
in-place edit is still seen.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache

from progra_core import versioning

__all__ = ["weights_digest", "runtime_versions", "resolve_folder"]

#: the libraries whose versions change what a local model answers
RUNTIME = ("torch", "transformers", "peft")


@cache
def runtime_versions() -> dict[str, str]:
    return versioning.third_party(list(RUNTIME))


@cache
def _hub_snapshot(repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id, local_files_only=True)


def resolve_folder(location: str) -> str:
    """The folder a model location names: itself, or a hub id's cached snapshot (never a download)."""
    if os.path.isdir(location):
        return location
    try:
        return _hub_snapshot(location)
    except Exception as e:
        raise FileNotFoundError(f"model {location!r} is neither a folder nor in the local Hugging Face cache: "
                                f"{type(e).__name__}") from None


def _content(path: str) -> str:
    if os.path.islink(path):
        target = os.path.realpath(path)
        if os.path.basename(os.path.dirname(target)) == "blobs" and os.path.isfile(target):
            return "blob:" + os.path.basename(target)  # the hub names blobs by their content hash
    return versioning.digest_or_reason(path)


def weights_digest(location: str) -> str:
    """sha256 over (relative path, content digest) of every file of the model at ``location``."""
    folder = resolve_folder(location)
    files = versioning.tree_digest(folder, content=_content)
    if not files:
        raise FileNotFoundError(f"model folder {folder} holds no files")
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:20]
