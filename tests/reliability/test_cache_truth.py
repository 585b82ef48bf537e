"""Caches that tell the truth: every key covers what decides the answer, and every stored entry is
data, never code. Each test names the symptom it guards against (docs/reliability.md, "What each
cache key covers")."""

from __future__ import annotations

import os
import pickle
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from progra_core.llm import ChatRequest, Gateway


class Canary:
    """Unpickling this creates a file: proof that stored bytes ran as code."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def ask(i: int = 0, model: str = "openai/test-model", **kw) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": f"question {i}"}], model, id=str(i), role="generator",
                       extra=kw.pop("extra", {"mock_response": f"answer {i}"} if not model.startswith("local/") else {}), **kw)


# -- the model's identity, never an alias ------------------------------------------------------------

def _second_model(src: Path, dst: Path) -> Path:
    """Same architecture and tokenizer as ``src``, different weights (another seed)."""
    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(src, dst)
    torch.manual_seed(1234)
    model = AutoModelForCausalLM.from_pretrained(src)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    model.save_pretrained(dst)
    return dst


def test_local_alias_for_another_model_is_not_served_the_first_models_answers(tmp_path, tiny_llama):
    """Symptom: evaluate's base policy is ``local/policy`` for any non-local policy; switching
    ``models.policy`` from A to B in one root served B A's cached answers."""
    other = _second_model(tiny_llama, tmp_path / "other")
    request = ask(model="local/policy", max_tokens=6)
    a = Gateway(tmp_path / "cache", local_models={"policy": str(tiny_llama)})
    (first,) = a.batch([request])
    assert first.ok and not first.cached and a.requests_sent == 1

    b = Gateway(tmp_path / "cache", local_models={"policy": str(other)})
    (second,) = b.batch([request])
    assert not second.cached and b.requests_sent == 1, "model B was served model A's cached answer"
    assert b.cache_key(request) != a.cache_key(request)

    # the same weights under another name or folder are the same model: their answers are shared
    copy = shutil.copytree(tiny_llama, tmp_path / "copy-of-a")
    c = Gateway(tmp_path / "cache", local_models={"renamed": str(copy)})
    (third,) = c.batch([ask(model="local/renamed", max_tokens=6)])
    assert third.cached and third.text == first.text and c.requests_sent == 0


def test_weights_edited_in_place_change_the_key(tmp_path, tiny_llama):
    """Same folder, same file sizes, new bytes (a retrained adapter or checkpoint saved over the old)."""
    model = shutil.copytree(tiny_llama, tmp_path / "m")
    g = Gateway(tmp_path / "cache", local_models={"m": str(model)})
    request = ask(model="local/m")
    before = g.cache_key(request)
    weights = next(model.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert g.cache_key(request) != before
    assert Gateway(tmp_path / "cache2", local_models={"m": str(model)}).cache_key(request) == g.cache_key(request)


def test_a_missing_local_model_is_the_endpoints_failure_not_a_crash(tmp_path):
    g = Gateway(tmp_path / "cache", local_models={"gone": str(tmp_path / "nowhere")})
    (r,) = g.batch([ask(model="local/gone")])
    assert not r.ok and r.retryable and "nowhere" in r.error


# -- entries are data -------------------------------------------------------------------------------

def _plant(cache_dir: Path, key: str, mode: int, value: bytes) -> None:
    """Write a raw diskcache row (what anyone with write access to the root can do)."""
    import diskcache

    diskcache.Cache(str(cache_dir)).close()  # the schema
    with sqlite3.connect(cache_dir / "cache.db") as db:
        db.execute("DELETE FROM Cache WHERE key = ?", (key,))
        db.execute("INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count, tag, size, mode,"
                   " filename, value) VALUES (?, 1, 0, NULL, 0, 0, NULL, 0, ?, NULL, ?)", (key, mode, sqlite3.Binary(value)))


def test_a_pickled_entry_never_runs_and_is_asked_again(tmp_path):
    """Symptom: diskcache's default values are pickles; a crafted entry ran code when a stage read it."""
    canary = tmp_path / "ran"
    request = ask(7)
    key = request.cache_key()  # a remote model: its string and api_base are its identity
    _plant(tmp_path / "cache", key, 4, pickle.dumps({"text": Canary(canary)}))  # 4 = diskcache MODE_PICKLE
    g = Gateway(tmp_path / "cache")
    try:
        (r,) = g.batch([request])
    finally:
        assert not canary.exists(), "a cache entry ran as code"
    assert r.ok and r.text == "answer 7" and not r.cached and g.requests_sent == 1
    (again,) = Gateway(tmp_path / "cache").batch([request])
    assert again.cached and again.text == "answer 7"  # the fresh answer replaced the planted row


@pytest.mark.parametrize("value", [b'{"text": "ans', b"\x80\x04\x95", b"[1, 2, 3]", b'{"text": 5}',
                                   b'{"text": "x", "error": "boom"}', b'{"text": "x", "__class__": "os.system"}'],
                         ids=["torn", "binary", "a list", "text not a string", "an error", "unknown field"])
def test_a_torn_foreign_or_mistyped_local_entry_is_a_logged_miss(tmp_path, value, caplog):
    """Symptom: a truncated entry raised on every rerun; a foreign value raised a TypeError."""
    request = ask(3)
    key = request.cache_key()
    _plant(tmp_path / "cache", key, 1, value)  # 1 = MODE_RAW: what JsonDisk writes, but not our JSON
    g = Gateway(tmp_path / "cache")
    with caplog.at_level("WARNING"):
        (r,) = g.batch([request])
    assert r.ok and r.text == "answer 3" and not r.cached and g.requests_sent == 1
    assert "ignoring entry" in caplog.text
    assert Gateway(tmp_path / "cache").batch([request])[0].cached


def test_a_broken_cache_database_is_set_aside_not_fatal(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "cache.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 20)  # truncated header
    g = Gateway(tmp_path / "cache")
    assert g.batch([ask(1)])[0].ok
    assert list((tmp_path / "cache").glob("cache.db.broken-*"))


@pytest.mark.parametrize("value", [b"[1, 2]", b'{"text": ["a"]}', b"\xff\xfe", b'{"text": "tor'],
                         ids=["a list", "text a list", "not utf-8", "torn"])
def test_object_store_entries_that_are_not_answers_are_misses(value):
    """Symptom: on object-store roots a foreign JSON value raised TypeError (the docstring said miss)."""
    import fsspec

    url = f"memory://truth-{abs(hash(value))}/llm_cache"
    g = Gateway(url)
    request = ask(5)
    key = request.cache_key()
    fs, base = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{base}/{key[:2]}/{key}.json", value)
    (r,) = g.batch([request])
    assert r.ok and r.text == "answer 5" and not r.cached and g.requests_sent == 1
    assert Gateway(url).batch([request])[0].cached


def test_no_cache_value_is_a_pickle(tmp_path):
    g = Gateway(tmp_path / "cache")
    g.batch([ask(i) for i in range(3)])
    g.close()
    with sqlite3.connect(tmp_path / "cache" / "cache.db") as db:
        rows = db.execute("SELECT mode, filename, value FROM Cache").fetchall()
    assert len(rows) == 3 and all(mode == 1 and filename is None and bytes(v).startswith(b"{") for mode, filename, v in rows)


# -- inputs hashed by content ------------------------------------------------------------------------

def _hf_folder(path: Path, text: str) -> Path:
    import datasets

    rows = [{"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]}]
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def test_hf_folder_edited_in_place_with_the_same_size_is_reingested(tmp_path):
    """Symptom: HF folders were fingerprinted by file names and sizes only."""
    from progra_core.config import IngestConfig
    from progra_core.data.ingest import fingerprint_inputs

    folder = _hf_folder(tmp_path / "hf", "alpha")
    cfg = IngestConfig(bfcl_categories=[], hf=[str(folder)])
    def sizes() -> dict[str, int]:
        return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}

    before, before_sizes = fingerprint_inputs(cfg), sizes()
    shutil.rmtree(folder)
    _hf_folder(folder, "omega")  # same length, other bytes
    assert sizes() == before_sizes  # what the old fingerprint looked at did not change
    assert fingerprint_inputs(cfg) != before


def test_dangling_link_and_never_ending_inputs_neither_crash_nor_hang(tmp_path):
    """Symptom: a dangling symlink in an HF folder crashed the fingerprint; a JSONL that never
    ends (a FIFO nobody writes, /dev/zero) hung it."""
    from progra_core.config import IngestConfig
    from progra_core.data.ingest import fingerprint_inputs, ingest

    folder = _hf_folder(tmp_path / "hf", "alpha")
    (folder / "dangling").symlink_to(tmp_path / "nothing-here")
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.jsonl"
    zero.symlink_to("/dev/zero")
    cfg = IngestConfig(bfcl_categories=[], hf=[str(folder)], jsonl=[str(fifo), str(zero)])
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(fp=fingerprint_inputs(cfg), run=ingest(cfg)), daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():  # unblock the FIFO so the thread can end, then fail
        with open(fifo, "w"):
            pass
        pytest.fail("fingerprinting or ingesting a never-ending input hung")
    files = out["fp"]["files"]
    assert files[str(fifo)].startswith("unreadable") and files[str(zero)].startswith("unreadable")
    assert files[str(folder)]["dangling"].startswith("unreadable")
    table, rejects, _ = out["run"]
    assert table.num_rows == 1  # the HF folder's row still came through
    assert sorted(r["reason"] for r in rejects) == ["unreadable_file", "unreadable_file"]


# -- Prefect stores no pickles under the root --------------------------------------------------------

@pytest.mark.usefixtures("prefect_server")
def test_stage_results_are_never_pickles_a_later_run_loads(tmp_path):
    """Symptom: stage tasks persisted cloudpickle results under <root>/prefect/storage; replacing
    ``progra-ingest-<id>`` with a crafted pickle ran code on the next ``progra stage ingest``."""
    from prefect.results import ResultRecord, ResultRecordMetadata
    from prefect.serializers import PickleSerializer
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH

    from flows.stage_flow import run_stage
    from progra_core.config import load_config

    cfg = load_config("embedded", overrides=[f"storage.root={tmp_path / 'root'}", "ingest.limit=2",
                                             "ingest.bfcl_categories=[base]", "synthesize.enabled=false"])
    storage = Path(PREFECT_RESULTS_LOCAL_STORAGE_PATH.value())
    before = set(storage.rglob("*")) if storage.exists() else set()
    (ref,) = run_stage(cfg, "ingest", None).values()
    written = (set(storage.rglob("*")) if storage.exists() else set()) - before
    assert not written, f"Prefect persisted results: {sorted(map(str, written))}"

    canary = tmp_path / "ran"
    storage.mkdir(parents=True, exist_ok=True)
    key = f"progra-{ref.stage}-{ref.dataset_id}"
    crafted = ResultRecord(metadata=ResultRecordMetadata(storage_key=str(storage / key), serializer=PickleSerializer()),
                           result=Canary(canary))
    (storage / key).write_bytes(crafted.serialize())
    try:
        (again,) = run_stage(cfg, "ingest", None).values()
    finally:
        assert not canary.exists(), "a stored Prefect result ran as code"
    assert again.dataset_id == ref.dataset_id and again.rows == ref.rows


def test_models_enter_the_root_as_safetensors_and_json_only(tmp_path):
    """A trainer's ``training_args.bin`` (a torch pickle) is left behind; any other pickle-format
    file refuses the upload rather than sit under the root for a later load."""
    from storage import DatasetStore

    store = DatasetStore(str(tmp_path / "root"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "adapter_config.json").write_text("{}")
    (out / "adapter_model.safetensors").write_bytes(b"weights")
    (out / "training_args.bin").write_bytes(pickle.dumps({"lr": 1}))
    final = Path(store.put_model(out, "sft", "m1"))
    assert sorted(p.name for p in final.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    (out / "optimizer.pt").write_bytes(pickle.dumps({}))
    with pytest.raises(ValueError, match="optimizer.pt"):
        store.put_model(out, "sft", "m2")


def test_the_local_backends_code_is_part_of_a_local_answers_key(tmp_path, tiny_llama, monkeypatch):
    """An edit to the in-process backend (generation, choice scoring) changes what a local model
    answers for the same request: its code version is in the key."""
    from progra_core import versioning
    from progra_core.llm import gateway

    g = Gateway(tmp_path / "cache", local_models={"m": str(tiny_llama)})
    request = ask(model="local/m")
    before = g.cache_key(request)
    assert gateway.BACKEND_VERSION == versioning.code_version("1", "progra_core.llm.local")
    monkeypatch.setattr(gateway, "BACKEND_VERSION", "1+edited")
    assert g.cache_key(request) != before
    assert ask().cache_key() == Gateway(tmp_path / "cache").cache_key(ask())  # remote keys do not depend on it


def test_auto_dtype_is_keyed_by_what_it_means_on_this_machine(tmp_path, tiny_llama, monkeypatch):
    """``local_dtype: auto`` is bfloat16 on a CPU with AMX and float32 on one without: a root shared
    by both (or a machine whose answer to "auto" changes) must not serve one dtype's answers as the
    other's. The key holds the resolved dtype, so ``auto`` and the dtype it resolves to share."""
    from progra_core.llm import local

    request = ask(model="local/m")
    key = lambda dtype: Gateway(tmp_path / "c", local_models={"m": str(tiny_llama)}, local_dtype=dtype).cache_key(request)  # noqa: E731
    monkeypatch.setattr(local, "cpu_bf16", lambda: True)
    amx = key("auto")
    assert amx == key("bfloat16") != key("float32")
    monkeypatch.setattr(local, "cpu_bf16", lambda: False)
    assert key("auto") == key("float32") != amx
