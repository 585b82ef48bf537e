"""The gateway's response cache: where answers already paid for are kept.

A local storage root keeps them in diskcache (SQLite, process-safe, fast). An object-store root
(``s3://``, ``gs://``, any fsspec URL) keeps them next to the datasets, one small JSON object per
request key under ``<root>/llm_cache/<key[:2]>/<key>.json``, so every worker that shares the root
shares the cache and a shard rerun on another machine never pays twice. A single PUT is atomic on
object stores, so a reader sees a whole entry or none; two workers that answer the same key write
equal answers, and the last write wins. Neither diskcache nor LiteLLM's S3 cache fits here: the
first cannot live on an object store, the second keys on LiteLLM's own request form (ours carries
``sample`` and ``seed`` for distinct candidates) and would bind the cache to boto3 instead of the
root's own fsspec filesystem.
"""

from __future__ import annotations

import json
import os
import posixpath
from typing import Any, Protocol

__all__ = ["ResponseCache", "ObjectCache", "open_cache"]


class ResponseCache(Protocol):
    def get(self, key: str) -> Any: ...
    def set(self, key: str, value: Any) -> Any: ...
    def close(self) -> None: ...


class ObjectCache:
    """``get`` / ``set`` / ``close`` (the part of diskcache's interface the gateway uses) over
    one JSON object per key on an fsspec filesystem."""

    def __init__(self, url: str):
        import fsspec

        self.fs, self.base = fsspec.core.url_to_fs(url)

    def _path(self, key: str) -> str:
        return posixpath.join(self.base, key[:2], f"{key}.json")

    def get(self, key: str) -> Any:
        try:
            return json.loads(self.fs.cat_file(self._path(key)))
        except FileNotFoundError:
            return None
        except ValueError:  # a torn or foreign object is a miss, never an answer
            return None

    def set(self, key: str, value: Any) -> bool:
        self.fs.pipe_file(self._path(key), json.dumps(value).encode())
        return True

    def close(self) -> None:
        pass


def open_cache(location: str | os.PathLike) -> ResponseCache:
    """diskcache for a local folder, :class:`ObjectCache` for an fsspec URL."""
    if "://" in str(location) and not str(location).startswith("file://"):
        return ObjectCache(str(location))
    import diskcache

    return diskcache.Cache(str(location).removeprefix("file://"), size_limit=2**36)
