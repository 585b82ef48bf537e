"""Fingerprinted Parquet datasets on any fsspec filesystem.

Layout: ``<root>/datasets/<stage>/<dataset_id>/`` holding ``part-*.parquet`` (zstd, row-group
statistics), optional rejects and ``_manifest.json``, which names the dataset's files. Readers see
either no dataset or a complete one. On a local root it is written under a temporary name and
renamed into place with its manifest already inside. On an object store (no rename there; ``mv``
is copy-then-delete) each writer puts its files under its own names and commits by creating the
manifest last with an exclusive PUT (``If-None-Match``): the first manifest wins, a losing writer
deletes its own files (or, caught mid-write by the winner's clean-up, returns the winner's dataset),
and readers trust only the files a manifest names. The dataset id is the
fingerprint of (stage, the stage's config section, parent ids, code version): the same inputs
always land in the same folder, which is what makes Prefect's cache key and a rerun's "nothing to
do" the same thing.

The same root holds trained adapters (``storage.models``) and the shards of long LLM stages in
progress (``storage.shards``); :class:`DatasetStore` carries both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from progra_core.schemas import REJECTS
from storage.errors import CorruptDataset, CorruptManifest, DatasetNotFound
from storage.manifest import NAME, Manifest, check_name
from storage.models import ModelFolders
from storage.runs import RunRecords
from storage.shards import ShardFiles, ShardIO

_log = logging.getLogger("progra.storage")
_warned: set[str] = set()
#: file versions already hashed and found equal to their manifest's digest (see ``DatasetStore.intact``)
_INTACT: set[tuple] = set()

__all__ = ["CALLS", "DatasetRef", "DatasetStore", "fingerprint", "DatasetNotFound", "CorruptManifest", "CorruptDataset", "ShardIO"]

MANIFEST = "_manifest.json"
ROW_GROUP_SIZE = 64_000




def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


#: Store and catalog operations in this process (``store.find``, ``catalog.refresh`` and
#: ``catalog.write``), logged once at the end of a CLI command: how often a run goes back to storage.
CALLS: Counter[str] = Counter()


def fingerprint(stage: str, config: Any, parents: list[str] | tuple[str, ...] = (), code_version: str = "") -> str:
    """Stable id of a dataset: sha256 over the stage, its config section, parents and code version."""
    payload = _canonical({"stage": stage, "config": config, "parents": list(parents), "code": code_version})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DatasetRef:
    """What flows pass between stages (never the data itself)."""

    dataset_id: str
    stage: str
    path: str
    rows: int
    bytes: int = 0
    rejects: int = 0
    parents: tuple[str, ...] = ()
    config: dict = field(default_factory=dict)
    code_version: str = ""
    flow_run_id: str | None = None
    created_at: str = ""
    stats: dict = field(default_factory=dict)
    files: tuple[str, ...] = ()  #: part file names in the dataset folder (empty: older manifests, listed)
    rejects_name: str = ""  #: the rejects file's name ("" with no rejects, or an older manifest)
    digests: dict = field(default_factory=dict)  #: file name -> sha256 of its bytes (empty: an older manifest)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["parents"], d["files"] = list(self.parents), list(self.files)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DatasetRef:
        d = dict(d)
        d["parents"] = tuple(d.get("parents") or ())
        d["files"] = tuple(d.get("files") or ())
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


class DatasetStore(ModelFolders, ShardFiles, RunRecords):
    """Write and read fingerprinted datasets under ``root`` (a local path or an fsspec URL); model
    folders (``storage.models``) and in-progress shards (``storage.shards``) live under the same root."""

    def __init__(self, root: str | os.PathLike):
        root = str(root)
        self.fs, self._root = fsspec.core.url_to_fs(root)
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.is_local = self.protocol in ("file", "local")
        if not self.is_local and self.protocol != "memory":
            # other processes publish here: a listing must be asked for, never remembered
            self.fs, self._root = fsspec.core.url_to_fs(root, use_listings_cache=False)
        if self.is_local:
            self._root = os.path.abspath(self._root)
        self.root_url = root if not self.is_local else self._root
        self.corrupt: list[str] = []  # datasets whose manifest could not be read (skipped by list())

    # -- paths -------------------------------------------------------------------------------

    def _join(self, *parts: str) -> str:
        return posixpath.join(self._root, *parts)

    def dataset_dir(self, stage: str, dataset_id: str) -> str:
        return self._join("datasets", stage, dataset_id)

    def url(self, path: str) -> str:
        """A path DuckDB/pyarrow outside this process can open."""
        return path if self.is_local else f"{self.protocol}://{path}"

    # -- write -------------------------------------------------------------------------------

    def exists(self, stage: str, dataset_id: str) -> bool:
        return self.fs.exists(posixpath.join(self.dataset_dir(stage, dataset_id), MANIFEST))

    def write(
        self,
        stage: str,
        table: pa.Table,
        *,
        dataset_id: str | None = None,
        config: dict | None = None,
        parents: list[str] | tuple[str, ...] = (),
        code_version: str = "",
        rejects: list[dict] | pa.Table | None = None,
        flow_run_id: str | None = None,
        stats: dict | None = None,
        rows_per_file: int = 500_000,
    ) -> DatasetRef:
        """Write a dataset atomically and return its ref. If another writer committed the same id
        first, that dataset is kept (same fingerprint = same inputs) and its ref is returned."""
        config = config or {}
        dataset_id = dataset_id or fingerprint(stage, config, parents, code_version)
        final = self.dataset_dir(stage, dataset_id)
        if self.exists(stage, dataset_id):
            return self.ref(stage, dataset_id)
        writer = uuid.uuid4().hex[:8]
        # local: a private folder renamed into place; object store: our own names in the final folder
        tmp = self._join("datasets", stage, f".tmp-{dataset_id}-{writer}") if self.is_local else final
        tag = "" if self.is_local else f"{writer}-"
        names: list[str] = []
        try:
            self.fs.makedirs(tmp, exist_ok=True)
            committed = False
            try:
                nbytes = 0
                n = table.num_rows
                digests: dict[str, str] = {}

                def put(name: str, tbl: pa.Table, **kw) -> int:
                    """Write one file and record the sha256 of exactly the bytes written."""
                    buf = pa.BufferOutputStream()
                    pq.write_table(tbl, buf, compression="zstd", **kw)
                    data = buf.getvalue().to_pybytes()
                    names.append(name)
                    with self.fs.open(posixpath.join(tmp, name), "wb") as f:
                        f.write(data)
                    digests[name] = hashlib.sha256(data).hexdigest()
                    return len(data)

                chunks = [table.slice(o, rows_per_file) for o in range(0, n, rows_per_file)] or [table]
                for i, chunk in enumerate(chunks):
                    nbytes += put(f"part-{tag}{i:05d}.parquet", chunk, row_group_size=ROW_GROUP_SIZE, write_statistics=True)
                n_rejects, rejects_name = 0, ""
                if rejects is not None:
                    rt = rejects if isinstance(rejects, pa.Table) else pa.Table.from_pylist(list(rejects), schema=REJECTS)
                    n_rejects, rejects_name = rt.num_rows, f"rejects{'-' + writer if tag else ''}.parquet"
                    put(rejects_name, rt)
                ref = DatasetRef(
                    dataset_id=dataset_id,
                    stage=stage,
                    path=self.url(final),
                    rows=n,
                    bytes=nbytes,
                    rejects=n_rejects,
                    parents=tuple(parents),
                    config=config,
                    code_version=code_version,
                    flow_run_id=flow_run_id,
                    created_at=datetime.now(UTC).isoformat(),
                    stats=stats or {},
                    files=tuple(x for x in names if x != rejects_name),
                    rejects_name=rejects_name,
                    digests=digests,
                )
                manifest = json.dumps(ref.to_dict(), indent=1, default=str).encode()
                if self.is_local:
                    with self.fs.open(posixpath.join(tmp, MANIFEST), "wb") as f:
                        f.write(manifest)
                    self._commit(tmp, final)
                else:
                    committed = self._commit_manifest(final, manifest, names)
            finally:
                if self.is_local:
                    if self.fs.exists(tmp):
                        self.fs.rm(tmp, recursive=True)
                elif not committed:  # lost the race, or failed mid-write: our files are nobody's
                    self._rm_quiet([posixpath.join(final, x) for x in names])
        except Exception:
            # On an object store a writer that commits the same id first removes the files no
            # manifest names, ours included, while we may still be writing them. Its dataset has
            # the same fingerprint, so it is the result; anything else is a real failure.
            if self.is_local or not self.exists(stage, dataset_id):
                raise
            _log.info("dataset %s/%s was committed by another writer while this one wrote; keeping it", stage, dataset_id)
        return self.ref(stage, dataset_id)

    def _commit_manifest(self, final: str, manifest: bytes, names: list[str]) -> bool:
        """Object stores: create the manifest only if none exists (an exclusive PUT). True if ours
        won; then files left by writers that died mid-publish (named by no manifest) are removed."""
        try:
            with self.fs.open(posixpath.join(final, MANIFEST), "xb") as f:
                f.write(manifest)
        except FileExistsError:
            return False  # someone else committed the same fingerprint first
        keep = {*names, MANIFEST}
        self._rm_quiet([p for p in self.fs.ls(final, detail=False, refresh=True) if posixpath.basename(p) not in keep])
        return True

    def _rm_quiet(self, paths: list[str]) -> None:
        for p in paths:
            try:
                self.fs.rm_file(p)
            except FileNotFoundError:
                pass

    def _commit(self, tmp: str, final: str) -> None:
        """Local roots: rename the finished folder into place."""
        if self.fs.exists(final):
            if self.fs.exists(posixpath.join(final, MANIFEST)):
                return  # someone else committed the same fingerprint first
            self.fs.rm(final, recursive=True)  # leftover of a crashed non-atomic filesystem
        try:
            os.rename(tmp, final)  # atomic on POSIX; fails if a concurrent writer won
        except OSError:
            if not os.path.exists(os.path.join(final, MANIFEST)):
                raise

    # -- read --------------------------------------------------------------------------------

    def ref(self, stage: str, dataset_id: str) -> DatasetRef:
        """The dataset's manifest, validated (:class:`Manifest`) and naming this very folder."""
        check_name(stage, "stage")
        check_name(dataset_id)
        p = posixpath.join(self.dataset_dir(stage, dataset_id), MANIFEST)
        try:
            with self.fs.open(p, "r") as f:
                raw = json.load(f)
            m = Manifest.model_validate(raw)
            if (m.stage, m.dataset_id) != (stage, dataset_id):
                raise ValueError(f"it describes {m.stage}/{m.dataset_id}, not the folder it is in")
            return DatasetRef.from_dict(m.model_dump())
        except FileNotFoundError:
            raise DatasetNotFound(f"{stage}/{dataset_id}") from None
        except (ValidationError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
            why = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()[:3]) \
                if isinstance(e, ValidationError) else f"{type(e).__name__}: {str(e)[:200]}"
            raise CorruptManifest(f"dataset {stage}/{dataset_id}: its {MANIFEST} is unreadable ({why}); move the folder "
                                  f"{self.dataset_dir(stage, dataset_id)} aside or rewrite the stage") from None

    def find(self, dataset_id: str) -> DatasetRef:
        """The dataset with this id in any stage (an id is a plain name, never a path)."""
        CALLS["store.find"] += 1
        try:
            check_name(dataset_id)
        except ValueError as e:
            raise DatasetNotFound(str(e)) from None
        for stage in self.stages():
            if self.exists(stage, dataset_id):
                return self.ref(stage, dataset_id)
        raise DatasetNotFound(dataset_id)

    def stages(self) -> list[str]:
        base = self._join("datasets")
        if not self.fs.exists(base):
            return []
        names = (posixpath.basename(p.rstrip("/")) for p in self.fs.ls(base, detail=False) if self.fs.isdir(p))
        return sorted(n for n in names if NAME.match(n))

    def list(self, stage: str | None = None) -> list[DatasetRef]:
        """Committed datasets (those with a manifest), oldest first."""
        refs = []
        for s in [stage] if stage else self.stages():
            base = self._join("datasets", s)
            if not self.fs.exists(base):
                continue
            for p in self.fs.ls(base, detail=False):
                name = posixpath.basename(p.rstrip("/"))
                if not NAME.match(name) or not self.fs.exists(posixpath.join(p, MANIFEST)):
                    continue
                try:
                    refs.append(self.ref(s, name))
                except CorruptManifest as e:
                    if str(e) not in self.corrupt:
                        self.corrupt.append(str(e))
                    if str(e) not in _warned:  # once per process, not per listing
                        _warned.add(str(e))
                        _log.warning("%s", e)
        return sorted(refs, key=lambda r: r.created_at)

    def lineage(self, refs, limit: int = 256) -> list[DatasetRef]:
        """``refs`` and every ancestor found, each once, nearest first: cycle-safe and bounded
        (a hand-edited manifest can make lineage loop; fingerprints never do)."""
        out: dict[str, DatasetRef] = {}
        todo = list(refs)
        while todo and len(out) < limit:
            ref = todo.pop(0)
            if ref.dataset_id in out:
                continue
            out[ref.dataset_id] = ref
            for p in ref.parents:
                if p not in out:
                    try:
                        todo.append(self.find(p))
                    except DatasetNotFound:
                        continue
        return list(out.values())

    def files(self, ref: DatasetRef) -> list[str]:
        """The dataset's part files: those its manifest names (a folder may also hold files of a
        writer that lost or died; they are never read)."""
        d = self.dataset_dir(ref.stage, ref.dataset_id)
        if ref.files:
            return [posixpath.join(d, x) for x in ref.files]
        return sorted(p for p in self.fs.ls(d, detail=False) if posixpath.basename(p).startswith("part-"))

    def rejects_file(self, ref: DatasetRef) -> str | None:
        d = self.dataset_dir(ref.stage, ref.dataset_id)
        if ref.files:  # a manifest that names its files names its rejects too
            return posixpath.join(d, ref.rejects_name) if ref.rejects_name else None
        p = posixpath.join(d, "rejects.parquet")
        return p if self.fs.exists(p) else None

    def _checked(self, ref: DatasetRef, path: str) -> bytes:
        """The file's bytes, if they are the bytes its manifest recorded (``CorruptDataset`` if not)."""
        with self.fs.open(path, "rb") as f:
            data = f.read()
        want = ref.digests.get(posixpath.basename(path))
        if want is not None and hashlib.sha256(data).hexdigest() != want:
            raise CorruptDataset(f"dataset {ref.stage}/{ref.dataset_id}: {posixpath.basename(path)} is not the file its "
                                 "manifest recorded (sha256 differs); rewrite the stage (move the folder "
                                 f"{self.dataset_dir(ref.stage, ref.dataset_id)} aside first)")
        _INTACT.add(self._stamp(path, want))
        return data

    def _stamp(self, path: str, digest: str | None) -> tuple:
        """What identifies one version of a file without reading it: size and mtime locally, size
        and ETag (or mtime) on an object store."""
        info = self.fs.info(path)
        version = info.get("mtime") or info.get("ETag") or info.get("LastModified") or info.get("created")
        return (self.root_url, path, info.get("size"), str(version), digest)

    def intact(self, ref: DatasetRef) -> bool:
        """Whether every file of ``ref`` still has the digest its manifest recorded (each file
        version is hashed once per process). A dataset that fails is added to ``corrupt``."""
        try:
            for p in [*self.files(ref), *filter(None, [self.rejects_file(ref)])]:
                want = ref.digests.get(posixpath.basename(p))
                if want is None or self._stamp(p, want) in _INTACT:
                    continue
                self._checked(ref, p)
        except (CorruptDataset, FileNotFoundError) as e:
            msg = str(e) if isinstance(e, CorruptDataset) else \
                f"dataset {ref.stage}/{ref.dataset_id}: {posixpath.basename(str(e.filename or e))} is missing"
            if msg not in self.corrupt:
                self.corrupt.append(msg)
            if msg not in _warned:
                _warned.add(msg)
                _log.warning("%s", msg)
            return False
        return True

    def read(self, ref: DatasetRef | str, stage: str | None = None, columns: list[str] | None = None) -> pa.Table:
        """The dataset's rows; every part is checked against its digest first (``CorruptDataset``)."""
        if isinstance(ref, str):
            ref = self.ref(stage, ref) if stage else self.find(ref)
        tables = [pq.read_table(pa.BufferReader(self._checked(ref, p)), columns=columns) for p in self.files(ref)]
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def read_rejects(self, ref: DatasetRef) -> pa.Table:
        p = self.rejects_file(ref)
        if p is None:
            return REJECTS.empty_table()
        return pq.read_table(pa.BufferReader(self._checked(ref, p)))

    def _put_atomic(self, path: str, data: bytes) -> None:
        """One file, seen whole or not at all: a temporary file renamed over it locally, a single
        PUT on an object store (a PUT is atomic there; ``mv`` would be copy-then-delete)."""
        d = posixpath.dirname(path)
        self.fs.makedirs(d, exist_ok=True)
        if not self.is_local:
            self.fs.pipe_file(path, data)
            return
        tmp = posixpath.join(d, f".tmp-{uuid.uuid4().hex[:8]}-{posixpath.basename(path)}")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
