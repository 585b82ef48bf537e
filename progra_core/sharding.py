"""Resumable, shard-by-shard processing for paid (LLM) stages.

Items are cut into shards of fixed size in a stable order; a shard's key is a hash of the ids it
holds, so the same inputs always make the same shards. A shard that is already stored is loaded,
not recomputed; each finished shard is stored at once. A killed run therefore resumes where it
stopped, and the LLM response cache covers the items of the shard that was in flight.

When a shard fails (its endpoint stays down past every retry), no further shard is started, the
shards already in flight are still stored as they finish, and :class:`StageIncomplete` says how much
is done and what a rerun will do.

The storage side is any object with ``done() -> dict[key, Table]`` and ``write(key, Table)``
(``storage.ShardIO``), so this module stays storage- and Prefect-free.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import pyarrow as pa

__all__ = ["ShardIO", "MemoryShards", "Mapper", "StageIncomplete", "plan_shards", "run_sharded", "sequential"]


class StageIncomplete(RuntimeError):
    """Some shards could not be finished; the finished ones are stored and a rerun resumes."""


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


#: ``mapper(process, jobs)`` runs ``process(part)`` for each ``(key, part)`` job and yields
#: ``(key, table)`` as shards finish, in any order (Prefect tasks over a task runner). After a
#: failure it starts no new job, yields the jobs still in flight as they finish, then raises.
Mapper = Callable[[Callable[[list[dict]], pa.Table], list[tuple[str, list[dict]]]], Iterable[tuple[str, pa.Table]]]


def sequential(process: Callable[[list[dict]], pa.Table], jobs: list[tuple[str, list[dict]]]) -> Iterator[tuple[str, pa.Table]]:
    for key, part in jobs:
        yield key, process(part)  # an exception stops here: nothing after it is started


def run_sharded(items: Sequence[dict], id_key: str, size: int, process: Callable[[list[dict]], pa.Table],
                io: ShardIO, progress: Callable[[int, int], None] | None = None,
                mapper: Mapper = sequential) -> tuple[pa.Table | None, dict]:
    """Process items shard by shard, skipping stored shards; each finished shard is stored at once.
    Returns (all shard tables concatenated in plan order, stats with shards total/reused/computed
    and items computed)."""
    plan = plan_shards([it[id_key] for it in items], size)
    have = io.done()
    tables: dict[str, pa.Table] = {k: have[k] for k, _ in plan if k in have}
    sizes = {k: len(idx) for k, idx in plan}
    done_items = sum(sizes[k] for k in tables)
    jobs = [(k, [items[i] for i in idx]) for k, idx in plan if k not in tables]
    if progress is not None and tables:
        progress(done_items, len(items))
    try:
        for key, t in mapper(process, jobs):
            io.write(key, t)
            tables[key] = t
            done_items += sizes[key]
            if progress is not None:
                progress(done_items, len(items))
        if progress is not None and not jobs:  # nothing to compute (no items, or every shard stored): say so
            progress(done_items, len(items))
    except Exception as e:
        left = len(plan) - len(tables)
        raise StageIncomplete(
            f"{left} of {len(plan)} shards ({len(items) - done_items} of {len(items)} items) are unfinished: "
            f"{type(e).__name__}: {e}. The {len(tables)} finished shards are stored; rerun the same stage to resume "
            "(answers already received are served from the response cache).") from e
    stats = {"shards": len(plan), "shards_reused": len(plan) - len(jobs), "shards_computed": len(jobs),
             "items_computed": sum(len(p) for _, p in jobs)}
    ordered = [tables[k] for k, _ in plan if tables.get(k) is not None]
    if not ordered:
        return None, stats
    return pa.concat_tables(ordered, promote_options="default"), stats
