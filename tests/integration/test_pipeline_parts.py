"""The parts the deployments are made of, under Prefect's test server: the nightly data refresh
(new seed -> new versions, old ones kept), the ``stage`` flow (ids out, recorded for a remote
parent, cache hit on rerun), shard tasks mapped over the default thread-pool task runner, and
``progra export``."""

from __future__ import annotations

import json
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from progra_core.config import load_config
from tests.support import flow_overrides as _overrides

pytestmark = pytest.mark.usefixtures("prefect_server")


def _synthesis_on(api_base: str) -> list[str]:
    roles = ("generator", "action", "reviewer", "verifier", "augmenter")
    return ["synthesize.enabled=true", "synthesize.attempts=1", "synthesize.turns=1", "synthesize.max_iterations=1",
            "synthesize.candidates=2", "synthesize.reviewers=1", "synthesize.involved_classes=[[GorillaFileSystem]]",
            "synthesize.concurrency=1", "ingest.limit=2",
            *(f"models.{r}=openai/echo" for r in roles), "models.api_base=" + json.dumps({r: api_base for r in roles})]


def test_data_refresh_makes_new_versions_and_keeps_the_old(tmp_path, katan_echo):
    from flows.pipeline import data_refresh
    from storage import Catalog, DatasetStore

    srv = katan_echo()
    root = tmp_path / "root"
    sets = [*_overrides(root, srv.api_base, "openai/echo"), *_synthesis_on(srv.api_base)]
    first = data_refresh("embedded", sets, seed=1)
    second = data_refresh("embedded", sets, seed=2)
    for stage in ("synthesized", "trajectories", "segments", "sft_examples"):
        assert first[stage] != second[stage], stage  # a new seed: new versions all the way down
    assert data_refresh("embedded", sets, seed=2) == second  # the same night again: cache hits
    store = DatasetStore(root)
    seeds = sorted(json.loads(r["config"])["section"]["seed"] for r in Catalog(root).sql(
        "select config from datasets where stage = 'synthesized'").to_pylist())
    assert seeds == [1, 2]  # the older version is kept ...
    cat = Catalog(root)
    assert cat.sql("select count(distinct dataset_id) n from segments").to_pylist()[0]["n"] == 2  # ... and queryable
    assert cat.sql("select distinct dataset_id from segments_latest").column(0).to_pylist() == [second["segments"]]
    # with no seed, the run's scheduled date picks it (a retry of the same night reuses it)
    today = int(time.strftime("%Y%m%d", time.gmtime()))
    dated = data_refresh("embedded", sets)
    assert store.ref("synthesized", dated["synthesized"]).config["section"]["seed"] in (today, today + 1)


def test_stage_flow_returns_ids_records_them_and_hits_the_cache(tmp_path, katan_echo, monkeypatch):
    from flows.ingest import ingest_flow
    from flows.stage_flow import stage
    from storage import DatasetStore, store

    srv = katan_echo()
    root = tmp_path / "root"
    cfg = load_config("embedded", overrides=_overrides(root, srv.api_base, "openai/echo"))
    traj = ingest_flow(cfg).dataset_id
    seen = {}
    real = DatasetStore.write_run_outputs

    def spy(self, run_id, outputs):
        seen[run_id] = outputs
        return real(self, run_id, outputs)

    monkeypatch.setattr(DatasetStore, "write_run_outputs", spy)
    ids = stage("segment", [traj], config=cfg)
    assert list(ids) == ["segments"] and list(DatasetStore(root).find(ids["segments"]).parents) == [traj]
    (run_id, outputs), = seen.items()
    assert outputs == ids and DatasetStore(root).read_run_outputs(run_id) == ids
    # the deployment's way in: a profile plus key=value overrides, same dataset, nothing written
    written: list[str] = []
    real_write = store.DatasetStore.write
    monkeypatch.setattr(store.DatasetStore, "write", lambda self, st, *a, **k: written.append(st) or real_write(self, st, *a, **k))
    again = stage("segment", [traj], overrides=_overrides(root, srv.api_base, "openai/echo"), profile="embedded")
    assert again == ids and written == []
    with pytest.raises(ValueError, match=r"reads 'segments': give 1 input id\(s\), got 0"):
        stage("awareness", [], config=cfg)
    with pytest.raises(ValueError, match="unknown stage"):
        stage("nope", [traj], config=cfg)
    with pytest.raises(ValueError, match="reads a 'segments' dataset"):
        stage("awareness", [traj], config=cfg)
    # a stage deployment whose `name` was edited in the form refuses instead of running another stage
    import flows.stage_flow as fs

    monkeypatch.setattr(fs, "prefect_deployment_name", lambda: "stage-verify")
    with pytest.raises(ValueError, match="stage-verify deployment runs stage 'verify'.*run the stage-segment deployment"):
        stage("segment", [traj], config=cfg)


def _probe_shards(tmp_path, cfg, n_items: int, stage: str, dataset_id: str, ordered: bool = False):
    """``run_sharded`` of ``n_items`` rows in shards of 2 through ``shard_mapper`` inside a flow,
    each shard sleeping a little: (table, stats, peak shards at once, thread names, first row of
    each shard in start order, the ShardIO)."""
    from prefect import flow

    from flows.task_runners import with_runner
    from progra_core.sharding import run_sharded
    from storage import DatasetStore, ShardIO
    from tasks.shards import shard_mapper

    items = [{"id": f"i{n:02d}"} for n in range(n_items)]
    live, peak, threads, seen = [0], [0], set(), []
    lock = threading.Lock()

    def work(part, gateway):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
            threads.add(threading.current_thread().name)
            seen.append(part[0]["id"])
        time.sleep(0.4 if not ordered else 0.2)
        with lock:
            live[0] -= 1
        return pa.table({"id": [p["id"] for p in part]})

    shards = ShardIO(DatasetStore(tmp_path), stage, dataset_id)

    @flow(name="shard-probe")
    def probe():
        return run_sharded(items, "id", 2, None, shards,
                           mapper=shard_mapper(cfg, str(tmp_path), "probe", work, [], ordered=ordered))

    table, stats = with_runner(probe, cfg)()
    return table, stats, peak[0], threads, seen, shards, items


def test_shards_are_mapped_over_the_thread_pool_task_runner(tmp_path):
    """A sharded stage maps one task per shard over the flow's task runner (a thread pool by
    default): shards overlap in time, each is stored, and the rows keep the plan's order."""
    from flows.task_runners import task_runner

    cfg = load_config("embedded", overrides=[f"storage.root={tmp_path}", "dispatch.max_workers=3"])
    assert type(task_runner(cfg)).__name__ == "ThreadPoolTaskRunner" and task_runner(cfg)._max_workers == 3
    table, stats, peak, threads, _, shards, items = _probe_shards(tmp_path, cfg, 12, "awareness", "probe00000000000")
    assert table.num_rows == 12 and stats["shards"] == 6 and stats["shards_computed"] == 6 and len(shards.done()) == 6
    assert peak == 3 and len(threads) == 3  # max_workers shard tasks at once
    assert table.column("id").to_pylist() == [i["id"] for i in items]


def test_shards_of_an_in_process_local_model_run_one_at_a_time_in_key_order(tmp_path):
    """A ``local/`` model on the thread runner: shards one at a time, in the plan's order (the
    prefix cache history, hence the bf16 answers, is then the same on every run); an endpoint
    model or another runner keeps the pool."""
    from tasks.shards import in_order

    cfg = load_config("embedded", overrides=[f"storage.root={tmp_path}", "dispatch.max_workers=3"])
    assert in_order(cfg, "local/smollm2") and not in_order(cfg, "openai/gpt-4o") and not in_order(cfg, None)
    assert not in_order(cfg.model_copy(update={"dispatch": cfg.dispatch.model_copy(update={"task_runner": "dask"})}), "local/x")
    table, stats, peak, _, seen, _, items = _probe_shards(tmp_path, cfg, 8, "verified", "probe00000000001", ordered=True)
    assert peak == 1 and seen == ["i00", "i02", "i04", "i06"] and stats["shards_computed"] == 4
    assert table.column("id").to_pylist() == [i["id"] for i in items]


def test_export_parquet_jsonl_hf(tmp_path, monkeypatch):
    from datasets import load_from_disk

    from flows.cli import app
    from storage import DatasetStore

    root = tmp_path / "root"
    table = pa.table({"segment_id": ["a", "b", "c"], "equal": [True, False, True], "calls": [["x()"], [], ["y(1)", "z()"]]})
    ref = DatasetStore(root).write("verified", table, dataset_id="0123456789abcdef", parents=[])
    run = CliRunner().invoke
    out = run(app, ["export", "verified", str(tmp_path / "v.parquet"), "--root", str(root), "--where", "equal"])
    assert out.exit_code == 0, out.output
    assert pq.read_table(tmp_path / "v.parquet").column("segment_id").to_pylist() == ["a", "c"]
    out = run(app, ["export", ref.dataset_id[:8], str(tmp_path / "v.jsonl"), "--format", "jsonl", "--root", str(root)])
    assert out.exit_code == 0, out.output
    lines = [json.loads(x) for x in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [x["calls"] for x in lines] == [["x()"], [], ["y(1)", "z()"]]
    out = run(app, ["export", "verified_latest", str(tmp_path / "hf"), "--format", "hf", "--root", str(root)])
    assert out.exit_code == 0, out.output
    ds = load_from_disk(str(tmp_path / "hf"))
    assert ds.num_rows == 3 and ds[2]["calls"] == ["y(1)", "z()"]
    assert run(app, ["export", "verified", str(tmp_path / "x"), "--format", "csv", "--root", str(root)]).exit_code == 2
    assert run(app, ["export", "no_such_view", str(tmp_path / "x"), "--root", str(root)]).exit_code == 2
    monkeypatch.delenv("HF_TOKEN", raising=False)
    out = run(app, ["export", "verified", str(tmp_path / "y.parquet"), "--root", str(root), "--push-to-hub", "me/verified"])
    assert out.exit_code == 1 and "HF_TOKEN" in out.output
