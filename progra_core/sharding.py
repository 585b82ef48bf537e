"""Resumable, shard-by-shard processing for paid (LLM) stages.

Items are cut into shards of fixed size in a stable order; a shard's key is a hash of the ids it
holds, so the same inputs always make the same shards. A shard that is already stored is loaded,
not recomputed; each finished shard is stored at once. A killed run therefore resumes where it
stopped, and the LLM response cache covers the items of the shard that was in flight.

The storage side is any object with ``done() -> dict[key, Table]`` and ``write(key, Table)``
(``storage.ShardIO``), so this module stays storage- and Prefect-free.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Protocol

import pyarrow as pa

__all__ = ["ShardIO", "MemoryShards", "plan_shards", "run_sharded"]


class ShardIO(Protocol):
    def done(self) -> dict[str, pa.Table]: ...

    def write(self, key: str, table: pa.Table) -> None: ...


class MemoryShards:
    """In-memory ShardIO (tests, one-off calls)."""

    def __init__(self):
        self.shards: dict[str, pa.Table] = {}

    def done(self) -> dict[str, pa.Table]:
        return dict(self.shards)

    def write(self, key: str, table: pa.Table) -> None:
        self.shards[key] = table


def plan_shards(ids: Sequence[str], size: int) -> list[tuple[str, list[int]]]:
    """(key, indices) per shard, items ordered by id; key = position + hash of the ids."""
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    out = []
    for n, s in enumerate(range(0, len(order), size)):
        idx = order[s:s + size]
        digest = hashlib.sha256("\n".join(ids[i] for i in idx).encode()).hexdigest()[:12]
        out.append((f"{n:05d}-{digest}", idx))
    return out


def run_sharded(items: Sequence[dict], id_key: str, size: int, process: Callable[[list[dict]], pa.Table],
                io: ShardIO, progress: Callable[[int, int], None] | None = None) -> tuple[pa.Table | None, dict]:
    """Process items shard by shard, skipping stored shards. Returns (all shard tables concatenated,
    stats with shards total/reused/computed and items computed)."""
    plan = plan_shards([it[id_key] for it in items], size)
    have = io.done()
    tables: list[pa.Table] = []
    reused = computed = items_computed = 0
    done_items = 0
    for key, idx in plan:
        if key in have:
            tables.append(have[key])
            reused += 1
        else:
            t = process([items[i] for i in idx])
            io.write(key, t)
            tables.append(t)
            computed += 1
            items_computed += len(idx)
        done_items += len(idx)
        if progress is not None:
            progress(done_items, len(items))
    stats = {"shards": len(plan), "shards_reused": reused, "shards_computed": computed, "items_computed": items_computed}
    tables = [t for t in tables if t is not None]
    if not tables:
        return None, stats
    return pa.concat_tables(tables, promote_options="default"), stats
