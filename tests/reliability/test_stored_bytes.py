"""Stored data that is not what was written, and SQL that reaches past the committed data: a
manifest is checked before anything follows it, every part is checked against its digest, ids and
adapter locations stay inside their root/cache, lineage loops are caught, and a user's filter is
one expression by DuckDB's own parser. Each test names the symptom it guards against."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from progra_core.schemas import reject
from storage import Catalog, CorruptDataset, CorruptManifest, DatasetNotFound, DatasetStore
from storage.catalog import SQLRefused, check_filter


def _table(tag: str, n: int = 3) -> pa.Table:
    return pa.table({"segment_id": [f"{tag}{i}" for i in range(n)], "x": list(range(n))})


@pytest.fixture
def root(tmp_path):
    """A root with two stages: segments (``good``) and trajectories (``other``), and an outside
    Parquet file a manifest could be pointed at."""
    store = DatasetStore(tmp_path / "root")
    good = store.write("segments", _table("s"), config={})
    other = store.write("trajectories", _table("t"), config={}, rejects=[reject("trajectories", "t9", "bad", "why")])
    outside = tmp_path / "secret.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"segment_id": ["SECRET"], "x": [99]}), outside)
    return store, good, other, outside


def _manifest(store: DatasetStore, ref) -> Path:
    return Path(store.dataset_dir(ref.stage, ref.dataset_id)) / "_manifest.json"


def _edit(store, ref, **changes) -> None:
    p = _manifest(store, ref)
    m = json.loads(p.read_text())
    m.update(changes)
    p.write_text(json.dumps(m))


@pytest.mark.parametrize("files", [["../../trajectories/X/part-00000.parquet"], ["/etc/passwd"], ["part-*.parquet"],
                                   ["part-00000.parquet", "part-00000.parquet"], ["secret.parquet"]],
                         ids=["dotdot", "absolute", "glob", "twice", "not-a-part"])
def test_a_manifest_that_names_files_outside_its_folder_is_never_followed(root, files):
    store, good, _, outside = root
    _edit(store, good, files=[str(outside) if f == "secret.parquet" else f for f in files])
    with pytest.raises(CorruptManifest, match="segments/" + good.dataset_id):
        store.ref("segments", good.dataset_id)
    assert [r.stage for r in store.list()] == ["trajectories"]  # the other stage still lists
    store = DatasetStore(store.root_url)
    assert Catalog(store.root_url).user_sql("select count(*) n from segments").column(0).to_pylist() == [0]
    assert [r.stage for r in store.list()] == ["trajectories"]
    assert any(f"segments/{good.dataset_id}" in c for c in store.corrupt)  # named, not silently dropped


@pytest.mark.parametrize("field,value", [("rows", "12"), ("created_at", 5), ("parents", "abc"), ("files", {"a": 1}),
                                         ("dataset_id", "../other"), ("extra_field", 1), ("digests", {"part-00000.parquet": "0"})])
def test_a_wrongly_typed_manifest_is_skipped_and_every_other_stage_stays_queryable(root, field, value):
    """Before: ``created_at: 5`` crashed the listing's sort and with it `progra datasets` and
    `progra sql` on every stage."""
    from flows.cli import app

    store, good, other, _ = root
    _edit(store, good, **{field: value})
    runner = CliRunner()
    listing = runner.invoke(app, ["datasets", "--root", store.root_url], env={"COLUMNS": "250"})
    assert listing.exit_code == 0, listing.output
    q = runner.invoke(app, ["sql", "select count(*) as n from trajectories", "--root", store.root_url, "-f", "json"])
    assert q.exit_code == 0 and '"n": 3' in q.output, q.output
    ids = runner.invoke(app, ["sql", "select dataset_id from datasets", "--root", store.root_url, "-f", "json"])
    assert ids.exit_code == 0 and other.dataset_id in ids.output and good.dataset_id not in ids.output, ids.output
    with pytest.raises(CorruptManifest):
        DatasetStore(store.root_url).ref("segments", good.dataset_id)


def test_one_flipped_bit_in_a_part_is_an_error_naming_the_dataset_never_data(root):
    store, good, other, _ = root
    part = Path(store.files(good)[0])
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    store = DatasetStore(store.root_url)
    with pytest.raises(CorruptDataset, match=f"segments/{good.dataset_id}"):
        store.read(good.dataset_id)
    assert not store.intact(store.ref("segments", good.dataset_id)) and store.intact(other)
    cat = Catalog(store.root_url)
    assert cat.user_sql("select count(*) from segments").column(0).to_pylist() == [0]  # not served by a view
    assert cat.user_sql("select count(*) from trajectories").column(0).to_pylist() == [3]
    from flows.cli import app

    out = CliRunner().invoke(app, ["datasets", "--root", store.root_url], env={"COLUMNS": "250"})
    assert out.exit_code == 0 and "corrupt" in out.output and good.dataset_id in out.output


def test_a_rejects_file_with_flipped_bytes_is_caught_too(root):
    store, _, other, _ = root
    p = Path(store.rejects_file(other))
    p.write_bytes(p.read_bytes()[:-9] + b"x" * 9)
    with pytest.raises(CorruptDataset, match="rejects"):
        DatasetStore(store.root_url).read_rejects(other)


def test_digests_are_recorded_for_every_file_a_writer_names(root):
    store, good, other, _ = root
    import hashlib

    for ref in (good, other):
        named = [*ref.files, *([ref.rejects_name] if ref.rejects_name else [])]
        assert set(ref.digests) == set(named)
        for name in named:
            path = Path(store.dataset_dir(ref.stage, ref.dataset_id)) / name
            assert ref.digests[name] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_dataset_id_given_as_a_path_never_resolves_into_another_root(root, tmp_path):
    store, good, _, _ = root
    elsewhere = DatasetStore(tmp_path / "elsewhere")
    foreign = elsewhere.write("segments", _table("f"), config={})
    rel = os.path.relpath(elsewhere.dataset_dir("segments", foreign.dataset_id), store.dataset_dir("segments", "x"))
    for bad in (rel, f"../../../elsewhere/datasets/segments/{foreign.dataset_id}", "/" + foreign.dataset_id, "*", ""):
        with pytest.raises(DatasetNotFound):
            store.find(bad)
        with pytest.raises((DatasetNotFound, ValueError)):
            store.ref("segments", bad)


def test_a_lineage_that_loops_is_an_error_not_a_hang(root):
    from tasks.stage_tasks import ancestor

    store, good, other, _ = root
    _edit(store, good, parents=[other.dataset_id])
    _edit(store, other, parents=[good.dataset_id])
    with pytest.raises(LookupError, match="loops"):
        ancestor(store, store.ref("segments", good.dataset_id), "ingest")


def test_an_adapter_location_outside_the_models_folder_is_refused(tmp_path):
    store = DatasetStore("memory://progra-adapter-fetch")
    cache = tmp_path / "fetched"
    for odd in ("memory://progra-adapter-fetch/models/../../../../tmp/x", "memory://elsewhere/models/sft/abc",
                "memory://progra-adapter-fetch/models/sft", "memory://progra-adapter-fetch/models/sft/a/b"):
        with pytest.raises(ValueError, match="not a model folder"):
            store.local_model(odd, cache_dir=cache)
    assert not cache.exists()


def test_the_rejects_view_names_its_dataset_on_an_object_store_root():
    """Object-store writers name the file ``rejects-<writer>.parquet``; the view's id pattern
    expected ``rejects.parquet`` and gave every row an empty dataset_id."""
    url = f"memory://progra-rejects-{os.getpid()}"
    store = DatasetStore(url)
    ref = store.write("trajectories", _table("t"), config={}, rejects=[reject("trajectories", "t9", "bad", "why")])
    assert ref.rejects_name.startswith("rejects-")
    got = Catalog(url).sql("select dataset_id, reason from rejects").to_pylist()
    assert got == [{"dataset_id": ref.dataset_id, "reason": "bad"}]


def test_user_sql_cannot_read_duckdbs_spill_folder_under_the_working_directory(root, tmp_path, monkeypatch):
    store, *_ = root
    work = tmp_path / "work"
    (work / ".tmp").mkdir(parents=True)
    (work / ".tmp" / "notes.csv").write_text("secret\nhunter2\n")
    monkeypatch.chdir(work)
    cat = Catalog(store.root_url)
    for q in ("select * from read_csv('.tmp/notes.csv')", f"select * from read_csv('{work}/.tmp/notes.csv')",
              "select * from glob('.tmp/*')"):
        with pytest.raises(Exception) as e:
            rows = cat.user_sql(q).to_pylist()
            assert not rows or "hunter2" not in str(rows)
            raise AssertionError(f"{q} read {rows}")
        assert "hunter2" not in str(e.value)


@pytest.mark.parametrize("where", ["x = $$'$$) UNION ALL SELECT * FROM trajectories WHERE ($$'$$",
                                   "x = $$a$$) UNION ALL SELECT * FROM trajectories WHERE ($$b$$",
                                   "x = $q$a$q$) UNION ALL SELECT * FROM trajectories WHERE ($q$b$q$",
                                   "1=1) UNION ALL (SELECT 'evil', 9", "x IN (SELECT x FROM trajectories)",
                                   "1=1) ORDER BY (x", "1=1; SELECT 1", "1=1 -- rest", "EXISTS (SELECT 1)"])
def test_export_where_is_one_expression_by_duckdbs_parser(root, where, tmp_path):
    """Before: a dollar-quoted string hid the ')' that closes the filter from the string rules, and
    the export read another view."""
    from flows.cli import app

    store, *_ = root
    with pytest.raises(SQLRefused):
        check_filter(where)
    out = tmp_path / "o.parquet"
    r = CliRunner().invoke(app, ["export", "segments", str(out), "--where", where, "--root", store.root_url])
    assert r.exit_code == 2 and not out.exists(), r.output


@pytest.mark.parametrize("where,n", [("x = 2", 1), ("segment_id LIKE 's%' AND x < 2", 2), ("x IN (0, 1, 2)", 3),
                                     ("segment_id = ')'", 0), ("segment_id = $$a'b$$", 0)])
def test_ordinary_filters_still_export(root, where, n, tmp_path):
    from flows.cli import app

    store, *_ = root
    out = tmp_path / "k.parquet"
    r = CliRunner().invoke(app, ["export", "segments", str(out), "--where", where, "--root", store.root_url])
    assert r.exit_code == 0 and f"{n} rows" in r.output, r.output


def test_a_jsonl_line_is_judged_on_at_most_the_record_limit(tmp_path, monkeypatch):
    """Before: a line was read whole before its size was checked, so a JSONL link to /dev/zero
    filled memory (MemoryError). Now at most the limit is held; an endless line ends the file with
    a reject saying so, and a merely long line is skipped to its end with the records after it kept."""
    import tracemalloc

    from progra_core.sources import chat

    monkeypatch.setattr(chat, "MAX_RECORD_BYTES", 4096)
    monkeypatch.setattr(chat, "MAX_SKIP_BYTES", 8 * 1024 * 1024)
    zero = tmp_path / "zero.jsonl"
    zero.symlink_to("/dev/zero")
    tracemalloc.start()
    out = list(chat.iter_jsonl(zero))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [(r["reason"], "rest of the file" in r["detail"]) for _, r in out] == [("record_too_large", True)]
    assert peak < 4 * 1024 * 1024, peak
    good = '{"id": "ok", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}'
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b'{"id": "big", "pad": "' + b"y" * 100_000 + b'"}\n' + good.encode() + b"\n")
    rows = list(chat.iter_jsonl(mixed))
    assert rows[0][1]["reason"] == "record_too_large" and "100" in rows[0][1]["detail"]
    assert rows[1][0] is not None and rows[1][1] is None  # the record after the long line is kept


def test_a_copied_root_finds_its_own_adapters_and_rows_cannot_point_outside_it(tmp_path):
    """A ``models`` row keeps the absolute path of the machine that trained it; after the root is
    copied elsewhere (and the original deleted) the adapter still resolves, under the new root."""
    import shutil

    src = tmp_path / "trained"
    src.mkdir()
    (src / "adapter_config.json").write_text("{}")
    old = DatasetStore(tmp_path / "a")
    path = old.put_model(src, "sft", "m1")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    new = DatasetStore(tmp_path / "b")
    assert Path(new.local_model(path)) == (tmp_path / "b" / "models" / "sft" / "m1").resolve()
    with pytest.raises(ValueError, match="not a model folder"):
        new.local_model(str(tmp_path / "elsewhere" / "adapter"))
    with pytest.raises(FileNotFoundError, match="m2"):
        new.local_model(path.replace("m1", "m2"))
