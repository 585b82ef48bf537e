"""In-progress shards of the long LLM stages: ``<root>/shards/<stage>/<dataset_id>/shard-<key>.parquet``,
each written atomically, so a killed run resumes from the shards it already paid for."""

from __future__ import annotations

import posixpath

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["ShardFiles", "ShardIO"]


class ShardFiles:
    """Shard files of a :class:`~storage.store.DatasetStore` (uses its ``fs``, ``_join`` and
    ``_put_atomic``)."""

    def shard_dir(self, stage: str, dataset_id: str) -> str:
        return self._join("shards", stage, dataset_id)

    def write_shard(self, stage: str, dataset_id: str, key: str, table: pa.Table) -> str:
        final = posixpath.join(self.shard_dir(stage, dataset_id), f"shard-{key}.parquet")
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, compression="zstd")
        self._put_atomic(final, buf.getvalue().to_pybytes())
        return final

    def read_shards(self, stage: str, dataset_id: str) -> dict[str, pa.Table]:
        d = self.shard_dir(stage, dataset_id)
        if not self.fs.exists(d):
            return {}
        out = {}
        for p in sorted(self.fs.ls(d, detail=False)):
            name = posixpath.basename(p)
            if name.startswith("shard-") and name.endswith(".parquet"):
                with self.fs.open(p, "rb") as f:
                    out[name[len("shard-"):-len(".parquet")]] = pq.read_table(f)
        return out

    def clear_shards(self, stage: str, dataset_id: str) -> None:
        d = self.shard_dir(stage, dataset_id)
        if self.fs.exists(d):
            self.fs.rm(d, recursive=True)


class ShardIO:
    """``progra_core.sharding.ShardIO`` over a store: finished shards of one dataset in progress."""

    def __init__(self, store: ShardFiles, stage: str, dataset_id: str):
        self.store, self.stage, self.dataset_id = store, stage, dataset_id

    def done(self) -> dict[str, pa.Table]:
        return self.store.read_shards(self.stage, self.dataset_id)

    def write(self, key: str, table: pa.Table) -> None:
        self.store.write_shard(self.stage, self.dataset_id, key, table)

    def clear(self) -> None:
        self.store.clear_shards(self.stage, self.dataset_id)
