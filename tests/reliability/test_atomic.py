"""Atomic writes: processes writing datasets of the same stage at once (the same id, other ids,
a writer SIGKILLed mid-write) while other processes read; a reader only ever sees no dataset or a
complete one, never a partial one, and the catalog always adds up."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pyarrow as pa

STAGE = "awareness_probe"
ROWS, PER_FILE = 300_000, 50_000  # six part files per dataset: a partial one would show


def _table(seed: int) -> pa.Table:
    return pa.table({"k": pa.array(range(seed, seed + ROWS), pa.int64()),
                     "text": pa.array([f"row {i} of dataset {seed} " * 3 for i in range(ROWS)])})


def _writer(root: str, ids: list[str], seed: int, go, out) -> None:
    from storage import DatasetStore

    store = DatasetStore(root)
    go.wait()
    for dataset_id in ids:
        ref = store.write(STAGE, _table(seed), dataset_id=dataset_id, config={"seed": seed}, rows_per_file=PER_FILE)
        out.put((dataset_id, ref.rows, os.getpid()))


def _reader(root: str, stop, out) -> None:
    """Loop over every visible dataset: its files hold exactly its manifest's rows, and the
    catalog's view counts the same total. Reports (observations, violations)."""
    from storage import Catalog, DatasetStore

    store, cat = DatasetStore(root), Catalog(root)
    seen, bad = [], []
    while not stop.is_set():
        refs = store.list(STAGE)
        seen.append(len(refs))
        for ref in refs:
            files = store.files(ref)
            got = store.read(ref).num_rows
            if got != ref.rows or len(files) != -(-ref.rows // PER_FILE):
                bad.append(f"{ref.dataset_id}: manifest {ref.rows} rows, files {len(files)} holding {got}")
        if not refs:  # the stage has no view until its first dataset exists
            continue
        try:
            n = cat.sql(f"select count(*) from {STAGE}").column(0)[0].as_py()
            visible = {r.dataset_id for r in refs}
            if n < ROWS * len(visible):  # the view was built after `refs`: it can only hold more
                bad.append(f"catalog counted {n} rows for {len(visible)} datasets")
        except Exception as e:  # noqa: BLE001 - anything a reader trips on is a violation
            bad.append(f"catalog: {type(e).__name__}: {e}")
        cat.refresh()  # several processes rewrite the DuckDB file: one wins, the others skip
    out.put((seen, bad))


def test_concurrent_writers_and_readers_never_see_a_partial_dataset(tmp_path):
    from storage import Catalog, DatasetStore

    root = str(tmp_path / "root")
    ctx = mp.get_context("spawn")
    go, stop, results, reports = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue()
    readers = [ctx.Process(target=_reader, args=(root, stop, reports)) for _ in range(2)]
    # two writers race for the same ids (same inputs = same fingerprint), a third writes others
    writers = [ctx.Process(target=_writer, args=(root, ["same-a", "same-b", "same-c"], 0, go, results)),
               ctx.Process(target=_writer, args=(root, ["same-a", "same-b", "same-c"], 0, go, results)),
               ctx.Process(target=_writer, args=(root, ["other-a", "other-b"], 7, go, results))]
    for p in readers + writers:
        p.start()
    time.sleep(3)  # readers are up and looping over an empty stage
    go.set()
    for p in writers:
        p.join(240)
        assert p.exitcode == 0
    # a fourth writer is SIGKILLed in the middle of a write
    killed = ctx.Process(target=_writer, args=(root, ["killed"], 9, go, results))
    killed.start()
    tmp_glob = os.path.join(root, "datasets", STAGE)
    deadline = time.time() + 60
    while time.time() < deadline and not any(n.startswith(".tmp-killed") and os.listdir(os.path.join(tmp_glob, n))
                                             for n in os.listdir(tmp_glob)):
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    killed.join(10)
    time.sleep(1)
    stop.set()
    outcomes = [results.get(timeout=10) for _ in range(8)]
    observed = [reports.get(timeout=60) for _ in readers]
    for p in readers:
        p.join(30)

    violations = [v for _, bad in observed for v in bad]
    assert violations == []
    counts = [n for seen, _ in observed for n in seen]
    assert min(counts) == 0 and max(counts) == 5 and len(counts) > 20  # readers saw before, during, after
    assert sorted({(i, n) for i, n, _ in outcomes}) == [(i, ROWS) for i in ("other-a", "other-b", "same-a", "same-b", "same-c")]
    store = DatasetStore(root)
    assert sorted(r.dataset_id for r in store.list(STAGE)) == ["other-a", "other-b", "same-a", "same-b", "same-c"]
    names = os.listdir(tmp_glob)
    assert [n for n in names if n.startswith(".tmp-") and not n.startswith(".tmp-killed")] == []  # losers cleaned up
    assert not store.exists(STAGE, "killed")  # the killed write left only an invisible temp folder
    assert Catalog(root).sql(f"select count(*) from {STAGE}").column(0)[0].as_py() == 5 * ROWS
    ref = store.write(STAGE, _table(9), dataset_id="killed", rows_per_file=PER_FILE)  # and can be written again
    assert ref.rows == ROWS and store.read(ref).num_rows == ROWS
