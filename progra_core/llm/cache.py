"""The gateway's response cache: where answers already paid for are kept.

A local storage root keeps them in diskcache (SQLite, process-safe, fast). An object-store root
(``s3://``, ``gs://``, any fsspec URL) keeps them next to the datasets, one small JSON object per
request key under ``<root>/llm_cache/<key[:2]>/<key>.json``, so every worker that shares the root
shares the cache and a shard rerun on another machine never pays twice. A single PUT is atomic on
object stores, so a reader sees a whole entry or none; two workers that answer the same key write
equal answers, and the last write wins.

An entry is data, never code: both kinds store JSON only. diskcache's default ``Disk`` pickles
values and unpickles whatever mode a row of its SQLite file claims, so the local cache uses
:class:`JsonDisk`, which writes every value inline as JSON bytes and reads nothing but such rows.
A torn, foreign or wrongly typed entry is a miss, logged and counted (``rejected``), and the
answer is asked again and stored over it; it is never an error and never trusted. Neither diskcache nor LiteLLM's S3 cache fits here: the
first cannot live on an object store, the second keys on LiteLLM's own request form (ours carries
``sample`` and ``seed`` for distinct candidates) and would bind the cache to boto3 instead of the
root's own fsspec filesystem.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import sqlite3
import time
from functools import cache
from typing import Any, Protocol

__all__ = ["ResponseCache", "ObjectCache", "LocalCache", "BadEntry", "open_cache"]

log = logging.getLogger("progra.llm.cache")


class BadEntry(ValueError):
    """A stored entry that is not this cache's JSON data (a pickle row, a file-backed row, torn bytes)."""


def _loads(raw: bytes | str, where: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BadEntry(f"{where}: not JSON ({type(e).__name__})") from None


class ResponseCache(Protocol):
    def get(self, key: str) -> Any: ...
    def set(self, key: str, value: Any) -> Any: ...
    def close(self) -> None: ...


class _Ignoring:
    """What both caches do with an entry that is not an answer: log it, count it, return a miss."""

    rejected = 0

    def ignore(self, key: str, why: object) -> None:
        self.rejected += 1
        log.warning("response cache: ignoring entry %s (%s); asking again", key[:12], why)


class ObjectCache(_Ignoring):
    """``get`` / ``set`` / ``close`` (the part of diskcache's interface the gateway uses) over
    one JSON object per key on an fsspec filesystem."""

    def __init__(self, url: str):
        import fsspec

        self.fs, self.base = fsspec.core.url_to_fs(url)

    def _path(self, key: str) -> str:
        return posixpath.join(self.base, key[:2], f"{key}.json")

    def get(self, key: str) -> Any:
        try:
            return _loads(self.fs.cat_file(self._path(key)), key)
        except FileNotFoundError:
            return None
        except BadEntry as e:  # a torn or foreign object is a miss, never an answer
            self.ignore(key, e)
            return None

    def set(self, key: str, value: Any) -> bool:
        self.fs.pipe_file(self._path(key), json.dumps(value).encode())
        return True

    def close(self) -> None:
        pass


@cache
def _json_disk():
    import diskcache

    class JsonDisk(diskcache.Disk):
        """Values as inline JSON bytes, whatever their size (no value files, no pickles); a row in
        any other mode (diskcache's pickle and file modes, or one written by another tool) is
        :class:`BadEntry`. Keys are the gateway's hex strings, stored raw."""

        def store(self, value, read, key=diskcache.core.UNKNOWN):
            if read:
                raise TypeError("JsonDisk stores JSON values, not files")
            return 0, diskcache.core.MODE_RAW, None, sqlite3.Binary(json.dumps(value).encode())

        def fetch(self, mode, filename, value, read):
            if mode != diskcache.core.MODE_RAW or filename is not None or not isinstance(value, (bytes, str)):
                raise BadEntry(f"a mode-{mode} row{' backed by a file' if filename else ''}, not JSON")
            return _loads(value, "row")

        def put(self, key):
            if not isinstance(key, str):
                raise TypeError("cache keys are strings")
            return super().put(key)

        def get(self, key, raw):
            if not raw:  # a pickled key: never loaded
                raise BadEntry("a pickled key")
            return super().get(key, raw)

    return JsonDisk


def __getattr__(name: str):  # ``JsonDisk`` without importing diskcache for object-store roots
    if name == "JsonDisk":
        return _json_disk()
    raise AttributeError(name)


class LocalCache(_Ignoring):
    """diskcache on a local folder with :class:`JsonDisk`. A database that cannot be opened
    (truncated, not SQLite) is moved aside (``cache.db.broken-<time>``) and a new one started,
    with a warning: what it held is asked again, never read from a broken file."""

    def __init__(self, directory: str, size_limit: int = 2**36):
        import diskcache

        self.directory = directory
        try:
            self._cache = diskcache.Cache(directory, size_limit=size_limit, disk=_json_disk())
        except sqlite3.DatabaseError as e:
            db = os.path.join(directory, "cache.db")
            aside = f"{db}.broken-{int(time.time())}"
            log.warning("response cache %s cannot be opened (%s): moved to %s, starting empty", db, e, aside)
            os.replace(db, aside)
            self._cache = diskcache.Cache(directory, size_limit=size_limit, disk=_json_disk())

    def get(self, key: str) -> Any:
        try:
            return self._cache.get(key)
        except (BadEntry, sqlite3.DatabaseError) as e:
            self.ignore(key, e)
            return None

    def set(self, key: str, value: Any) -> bool:
        return self._cache.set(key, value)

    def close(self) -> None:
        self._cache.close()

    def __len__(self) -> int:
        return len(self._cache)


def open_cache(location: str | os.PathLike) -> ResponseCache:
    """:class:`LocalCache` for a local folder, :class:`ObjectCache` for an fsspec URL."""
    if "://" in str(location) and not str(location).startswith("file://"):
        return ObjectCache(str(location))
    return LocalCache(str(location).removeprefix("file://"))
