"""Atomic writes: processes writing datasets of the same stage at once (the same id, other ids,
a writer SIGKILLed mid-write) while other processes read; a reader only ever sees no dataset or a
complete one, never a partial one, and the catalog always adds up. Twice: on a local root (rename
into place) and on an ``s3://`` root served by a real S3 server (manifest last, exclusive PUT)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pyarrow as pa
import pytest

STAGE = "awareness_probe"
# six part files per dataset: a partial one would show (fewer rows on S3: moto keeps objects in Python)
SIZES = {"local": (300_000, 50_000), "s3": (30_000, 5_000)}
ROWS, PER_FILE = SIZES["local"]


def _table(seed: int, rows: int = ROWS) -> pa.Table:
    return pa.table({"k": pa.array(range(seed, seed + rows), pa.int64()),
                     "text": pa.array([f"row {i} of dataset {seed} " * 3 for i in range(rows)])})


def _writer(root: str, ids: list[str], seed: int, go, out, rows: int = ROWS, per_file: int = PER_FILE,
            stall: bool = False) -> None:
    """``stall``: hang before the second file, so a kill lands mid-write whatever the machine's speed
    (a fast write used to commit between the parent's polls and before its SIGKILL)."""
    from storage import DatasetStore

    if stall:
        import storage.store as st

        real, calls = st.pq.write_table, []

        def slow_write(*a, **k):
            calls.append(1)
            if len(calls) > 1:
                time.sleep(3600)
            return real(*a, **k)

        st.pq.write_table = slow_write
    store = DatasetStore(root)
    go.wait()
    for dataset_id in ids:
        ref = store.write(STAGE, _table(seed, rows), dataset_id=dataset_id, config={"seed": seed}, rows_per_file=per_file)
        out.put((dataset_id, ref.rows, os.getpid()))


def _reader(root: str, stop, out, rows: int = ROWS, per_file: int = PER_FILE, most=None) -> None:
    """Loop over every visible dataset: its files hold exactly its manifest's rows, and the
    catalog's view counts the same total. Reports (observations, violations)."""
    from storage import Catalog, DatasetStore

    store, cat = DatasetStore(root), Catalog(root)
    seen, bad = [], []
    while not stop.is_set():
        refs = store.list(STAGE)
        seen.append(len(refs))
        if most is not None:
            most.value = max(most.value, len(refs))
        for ref in refs:
            files = store.files(ref)
            got = store.read(ref).num_rows
            if got != ref.rows or len(files) != -(-ref.rows // per_file):
                bad.append(f"{ref.dataset_id}: manifest {ref.rows} rows, files {len(files)} holding {got}")
        if not refs:  # the stage has no view until its first dataset exists
            continue
        try:
            n = cat.sql(f"select count(*) from {STAGE}").column(0)[0].as_py()
            visible = {r.dataset_id for r in refs}
            if n < rows * len(visible):  # the view was built after `refs`: it can only hold more
                bad.append(f"catalog counted {n} rows for {len(visible)} datasets")
        except Exception as e:  # noqa: BLE001 - anything a reader trips on is a violation
            bad.append(f"catalog: {type(e).__name__}: {e}")
        cat.refresh()  # several processes rewrite the DuckDB file: one wins, the others skip
    out.put((seen, bad))


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path):
    """(kind, root, rows, rows per file, the names in one dataset's folder or its temp folders)."""
    rows, per_file = SIZES[request.param]
    if request.param == "local":
        root = str(tmp_path / "root")

        def names(dataset_id: str) -> list[str]:
            base = os.path.join(root, "datasets", STAGE)
            return [n for n in os.listdir(base) if n.startswith(f".tmp-{dataset_id}") and os.listdir(os.path.join(base, n))]
        return "local", root, rows, per_file, names
    server = request.getfixturevalue("s3_server")
    import s3fs

    root = f"s3://{server['bucket']}/atomic-{os.getpid()}-{time.time_ns()}"
    fs = s3fs.S3FileSystem(use_listings_cache=False)

    def names(dataset_id: str) -> list[str]:
        d = f"{root}/datasets/{STAGE}/{dataset_id}"
        return [p.rsplit("/", 1)[-1] for p in fs.ls(d)] if fs.exists(d) else []
    return "s3", root, rows, per_file, names


def test_concurrent_writers_and_readers_never_see_a_partial_dataset(backend):
    from storage import Catalog, DatasetStore

    kind, root, rows, per_file, names = backend
    ctx = mp.get_context("spawn")
    go, stop, results, reports, most = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue(), ctx.Value("i", 0)
    readers = [ctx.Process(target=_reader, args=(root, stop, reports, rows, per_file, most)) for _ in range(2)]
    # two writers race for the same ids (same inputs = same fingerprint), a third writes others
    same = ["same-a", "same-b", "same-c"]
    writers = [ctx.Process(target=_writer, args=(root, same, 0, go, results, rows, per_file)),
               ctx.Process(target=_writer, args=(root, same, 0, go, results, rows, per_file)),
               ctx.Process(target=_writer, args=(root, ["other-a", "other-b"], 7, go, results, rows, per_file))]
    for p in readers + writers:
        p.start()
    time.sleep(3)  # readers are up and looping over an empty stage
    go.set()
    for p in writers:
        p.join(240)
        assert p.exitcode == 0
    # a fourth writer is SIGKILLed in the middle of a write (some of its files are written)
    killed = ctx.Process(target=_writer, args=(root, ["killed"], 9, go, results, rows, per_file, True))
    killed.start()
    deadline = time.time() + 60
    while time.time() < deadline and not names("killed"):
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    killed.join(10)
    left_by_killed = names("killed")
    deadline = time.time() + 60
    while most.value < 5 and time.time() < deadline:  # a reader's pass over S3 takes a few seconds
        time.sleep(0.1)
    time.sleep(1)
    stop.set()
    outcomes = [results.get(timeout=10) for _ in range(8)]
    observed = [reports.get(timeout=60) for _ in readers]
    for p in readers:
        p.join(30)

    violations = [v for _, bad in observed for v in bad]
    assert violations == []
    counts = [n for seen, _ in observed for n in seen]
    assert min(counts) == 0 and max(counts) == 5 and len(counts) > 20, counts  # readers saw before, during, after
    assert sorted({(i, n) for i, n, _ in outcomes}) == [(i, rows) for i in ("other-a", "other-b", "same-a", "same-b", "same-c")]
    store = DatasetStore(root)
    assert sorted(r.dataset_id for r in store.list(STAGE)) == ["other-a", "other-b", "same-a", "same-b", "same-c"]
    for dataset_id in same:  # the losing writer removed its files: only the winner's remain
        ref = store.ref(STAGE, dataset_id)
        assert len(ref.files) == rows // per_file
        if kind == "s3":
            assert sorted(names(dataset_id)) == sorted([*ref.files, "_manifest.json"])
    if kind == "local":
        base = os.path.join(root, "datasets", STAGE)
        assert [n for n in os.listdir(base) if n.startswith(".tmp-") and not n.startswith(".tmp-killed")] == []
    assert left_by_killed and "_manifest.json" not in left_by_killed  # it died holding files, unpublished
    assert not store.exists(STAGE, "killed")  # what the killed write left is invisible
    assert Catalog(root).sql(f"select count(*) from {STAGE}").column(0)[0].as_py() == 5 * rows
    ref = store.write(STAGE, _table(9, rows), dataset_id="killed", rows_per_file=per_file)  # and can be written again
    assert ref.rows == rows and store.read(ref).num_rows == rows
    if kind == "s3":  # the new commit removed the dead writer's files
        assert sorted(names("killed")) == sorted([*ref.files, "_manifest.json"])
