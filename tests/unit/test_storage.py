import json
import os
import posixpath

import pyarrow as pa
import pytest

from progra_core.schemas import TRAJECTORIES, reject
from storage import Catalog, DatasetNotFound, DatasetStore, fingerprint


def table(n, offset=0):
    return pa.table({"id": [f"r{i + offset}" for i in range(n)], "x": list(range(offset, offset + n)),
                     "tags": [["a", "b"]] * n})


def test_fingerprint_is_stable_and_sensitive():
    a = fingerprint("s", {"k": 1, "j": [1, 2]}, ["p1"], "v1")
    assert a == fingerprint("s", {"j": [1, 2], "k": 1}, ["p1"], "v1")  # key order free
    assert len({a, fingerprint("s", {"k": 2, "j": [1, 2]}, ["p1"], "v1"), fingerprint("s", {"k": 1, "j": [1, 2]}, ["p2"], "v1"),
                fingerprint("s", {"k": 1, "j": [1, 2]}, ["p1"], "v2"), fingerprint("t", {"k": 1, "j": [1, 2]}, ["p1"], "v1")}) == 5


def test_write_read_manifest_and_idempotence(tmp_path):
    store = DatasetStore(tmp_path)
    ref = store.write("things", table(10), config={"a": 1}, parents=["p0"], code_version="1",
                      rejects=[reject("things", "r99", "bad", "because")], stats={"k": 2})
    d = tmp_path / "datasets" / "things" / ref.dataset_id
    assert sorted(os.listdir(d)) == ["_manifest.json", "part-00000.parquet", "rejects.parquet"]
    man = json.loads((d / "_manifest.json").read_text())
    assert man["rows"] == 10 and man["rejects"] == 1 and man["parents"] == ["p0"] and man["stats"] == {"k": 2}
    assert store.read(ref).equals(table(10))
    assert store.read(ref.dataset_id).num_rows == 10
    assert store.read_rejects(ref).column("reason").to_pylist() == ["bad"]
    import pyarrow.parquet as pq

    md = pq.ParquetFile(d / "part-00000.parquet").metadata
    assert md.row_group(0).column(1).compression == "ZSTD" and md.row_group(0).column(1).statistics.has_min_max
    again = store.write("things", table(3), config={"a": 1}, parents=["p0"], code_version="1")
    assert again.dataset_id == ref.dataset_id and again.rows == 10  # same fingerprint: kept, not rewritten
    assert [r.dataset_id for r in store.list("things")] == [ref.dataset_id]
    with pytest.raises(DatasetNotFound):
        store.ref("things", "nope")


def test_partial_write_is_invisible(tmp_path):
    store = DatasetStore(tmp_path)

    with pytest.raises(AttributeError):  # fails mid-write, after the temp folder exists
        store.write("things", "not a table", dataset_id="abc")  # type: ignore[arg-type]
    assert store.list("things") == []
    assert not (tmp_path / "datasets" / "things" / "abc").exists()
    leftovers = os.listdir(tmp_path / "datasets" / "things")
    assert leftovers == []  # temp folder cleaned


def test_multi_file_and_shards(tmp_path):
    store = DatasetStore(tmp_path)
    ref = store.write("big", table(25), rows_per_file=10)
    assert len(store.files(ref)) == 3 and store.read(ref).num_rows == 25
    store.write_shard("aw", "fp1", "0001", table(2))
    store.write_shard("aw", "fp1", "0000", table(3, 2))
    shards = store.read_shards("aw", "fp1")
    assert list(shards) == ["0000", "0001"] and shards["0000"].num_rows == 3
    store.clear_shards("aw", "fp1")
    assert store.read_shards("aw", "fp1") == {}


def test_catalog_views_latest_lineage_rejects(tmp_path):
    store = DatasetStore(tmp_path)
    r1 = store.write("things", table(4), config={"v": 1}, rejects=[reject("things", "a", "too_big")])
    r2 = store.write("things", table(2, 100), config={"v": 2}, parents=[r1.dataset_id])
    cat = Catalog(tmp_path)
    assert cat.sql("select count(*) as n from things").column("n")[0].as_py() == 6
    assert cat.sql("select count(*) as n from things_latest").column("n")[0].as_py() == 2
    per = dict(zip(*cat.sql("select dataset_id, count(*) c from things group by 1").to_pydict().values(), strict=True))
    assert per == {r1.dataset_id: 4, r2.dataset_id: 2}
    lin = cat.sql("select stage, rows, parents from datasets where dataset_id = ?", [r2.dataset_id]).to_pylist()
    assert lin == [{"stage": "things", "rows": 2, "parents": [r1.dataset_id]}]
    rj = cat.sql("select stage, input_id, reason, dataset_id from rejects").to_pylist()
    assert rj == [{"stage": "things", "input_id": "a", "reason": "too_big", "dataset_id": r1.dataset_id}]
    assert cat.sql("select sum(len(tags)) s from things").column("s")[0].as_py() == 12  # nested stays nested
    # known stages exist (empty) before any run
    assert cat.sql("select count(*) n from trajectories").column("n")[0].as_py() == 0
    assert "turns" in cat.sql("select * from trajectories").column_names
    path = cat.refresh()
    import duckdb

    con = duckdb.connect(path, read_only=True)
    assert con.execute("select count(*) from things").fetchone()[0] == 6
    con.close()


def test_fsspec_memory_root():
    store = DatasetStore("memory://progra-test-root")
    assert not store.is_local
    rows = [{"trajectory_id": "t1", "source": "x", "turns": [], "n_turns": 0, "n_calls": 0}]
    ref = store.write("trajectories", pa.Table.from_pylist(rows, schema=TRAJECTORIES))
    assert ref.path.startswith("memory://")
    assert store.read(ref).column("trajectory_id").to_pylist() == ["t1"]
    cat = Catalog("memory://progra-test-root")
    assert cat.db_path is None
    assert cat.sql("select trajectory_id from trajectories").column(0).to_pylist() == ["t1"]
    assert cat.refresh() is None


def test_object_store_writer_whose_files_a_winner_removed_returns_the_winners_dataset():
    """The winner of a publish race removes the files its manifest does not name, including those
    of a writer still busy with the same id; that writer must return the winner's dataset, not fail
    (seen against the S3 server: FileNotFoundError from the loser's size() of its own part)."""
    root = f"memory://progra-race-{os.getpid()}"
    slow, fast = DatasetStore(root), DatasetStore(root)
    table = pa.table({"k": list(range(10))})
    opener, raced = slow.fs.open, []

    def open_after_a_rival_committed(path, mode="rb", **kw):
        if "w" in mode and path.endswith("00001.parquet") and not raced:
            # the first part is written; the rival now publishes the same id and cleans up
            raced.append(None)  # the rival's own opens pass straight through
            raced[0] = fast.write("things", table, dataset_id="same", rows_per_file=5)
        return opener(path, mode, **kw)

    slow.fs.open = open_after_a_rival_committed  # the memory filesystem is one shared instance
    try:
        ref = slow.write("things", table, dataset_id="same", rows_per_file=5)
    finally:
        del slow.fs.open
    assert raced and ref.files == raced[0].files and ref.created_at == raced[0].created_at
    assert slow.read(ref).column("k").to_pylist() == list(range(10))
    folder = slow.fs.ls(slow.dataset_dir("things", "same"), detail=False)
    assert sorted(posixpath.basename(p) for p in folder) == sorted([*ref.files, "_manifest.json"])

    with pytest.raises(AttributeError):  # a real failure, with no rival's manifest, still raises
        slow.write("things", "not a table", dataset_id="other")  # type: ignore[arg-type]
    assert not slow.exists("things", "other")


def test_catalog_views_follow_new_datasets_within_one_process(tmp_path):
    """``Catalog.sql`` keeps its views between queries (one DuckDB per root and process) and
    rebuilds exactly those whose datasets changed."""
    import pyarrow as pa

    from storage import Catalog, DatasetStore

    store, cat = DatasetStore(str(tmp_path)), Catalog(str(tmp_path))
    store.write("probe", pa.table({"x": [1, 2]}), dataset_id="a")
    assert cat.sql("select count(*) n, max(dataset_id) d from probe_latest").to_pylist() == [{"n": 2, "d": "a"}]
    store.write("probe", pa.table({"x": [3, 4, 5]}), dataset_id="b")
    assert Catalog(str(tmp_path)).sql("select count(*) from probe").column(0)[0].as_py() == 5
    assert cat.sql("select count(*) n, max(dataset_id) d from probe_latest").to_pylist() == [{"n": 3, "d": "b"}]
    assert sorted(cat.sql("select dataset_id from datasets").column(0).to_pylist()) == ["a", "b"]


def test_views_over_datasets_written_before_a_column_existed(tmp_path):
    """An eval_results dataset from before the next-call columns still loads: the views carry
    today's columns (NULL there), so eval_summary's SQL binds instead of failing the run."""
    from progra_core.schemas import EVAL_RESULTS

    old = EVAL_RESULTS.remove(EVAL_RESULTS.get_field_index("valid_call"))
    old = old.remove(old.get_field_index("right_function"))
    store = DatasetStore(tmp_path)
    store.write("eval_results", old.empty_table(), dataset_id="old")
    cat = Catalog(tmp_path)
    cols = cat.sql("select * from eval_results").column_names
    assert {"valid_call", "right_function"} <= set(cols) and cols[:len(old.names)] == old.names
    assert cat.sql("select count(*) from eval_summary").column(0)[0].as_py() == 0
