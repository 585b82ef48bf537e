"""An ``s3://`` storage root on a real S3-compatible server (moto's server mode on loopback): the
data flow, a stage rerun from another worker process in another working directory (which pays
nothing: the response cache lives on the root), ``progra sql`` / ``datasets`` / ``export`` and
DuckDB reading the datasets through fsspec (no extension download). Concurrent writers and a
killed writer on the same server: tests/reliability/test_atomic.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from progra_core.config import load_config
from tests.reliability import echo_data
from tests.reliability.conftest import echo_config, run_awareness
from tests.support import flow_overrides as _overrides

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_data_flow_on_an_s3_root_with_one_response_cache_for_all_workers(tmp_path, katan_echo, s3_server):
    import s3fs
    from prefect.settings import PREFECT_API_URL

    from flows.cli import app
    from flows.data import data_flow
    from storage import Catalog, DatasetStore

    srv = katan_echo()
    root = f"s3://{s3_server['bucket']}/flow-{uuid.uuid4().hex[:8]}"
    cfg = load_config("embedded", overrides=_overrides(root, srv.api_base, "openai/echo"))
    first = data_flow(cfg)
    assert {"trajectories", "segments", "awareness", "verified", "augmented", "sft_examples"} <= set(first)
    assert all(r.path.startswith(root + "/datasets/") for r in first.values())
    assert first["awareness"].rows + first["awareness"].rejects == first["segments"].rows > 10
    paid = srv.settled()
    assert paid >= first["segments"].rows  # (the echo answers no valid note here: rows are rejects with reasons)
    store = DatasetStore(root)
    fs = s3fs.S3FileSystem(use_listings_cache=False)
    assert len(fs.find(f"{root}/llm_cache")) > 0  # the answers live on the root, next to the datasets
    assert not fs.exists(f"{root}/shards/awareness")  # shards are removed at commit

    # Valid awareness (echo segments carry their note): paid once here, in this process...
    segs = echo_data.write_echo_segments(root, 12, echo_data.bfcl_segment_rows())
    acfg = echo_config(root, srv.api_base)
    aware = store.ref("awareness", run_awareness(acfg, segs)["awareness"])
    assert aware.rows == 12
    paid = srv.settled()
    # ...then a second worker: its own process and working directory (no local cache, no local
    # Prefect home), the same root. A new shard size is a new dataset id with the same requests.
    worker = tmp_path / "worker-b"
    worker.mkdir()
    conf = worker / "conf.yaml"
    conf.write_text(yaml.safe_dump(acfg.model_dump(mode="json")))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    out = subprocess.run([str(Path(sys.executable).parent / "progra"), "stage", "awareness", "--input", segs,
                          "--config", str(conf), "--set", "awareness.shard_size=3"],
                         cwd=worker, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert srv.settled() == paid  # every answer came from the shared cache: 0 requests
    again = [r for r in store.list("awareness") if r.dataset_id not in (aware.dataset_id, first["awareness"].dataset_id)]
    assert len(again) == 1 and again[0].rows == 12
    assert store.read(again[0]).column("summary").to_pylist() == store.read(aware).column("summary").to_pylist()
    assert not (worker / ".progra-local" / "llm_cache").exists()

    # Reading: the CLI and DuckDB over the same root (DuckDB through the fsspec filesystem)
    runner = CliRunner()
    r = runner.invoke(app, ["sql", "select count(*) as n from awareness", "--root", root, "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["n"] == 24
    r = runner.invoke(app, ["datasets", "--root", root])
    assert r.exit_code == 0 and first["sft_examples"].dataset_id[:10] in r.output, r.output
    dest = tmp_path / "verified.parquet"
    r = runner.invoke(app, ["export", first["verified"].dataset_id, str(dest), "--root", root])
    assert r.exit_code == 0, r.output
    assert pq.read_table(dest).num_rows == first["verified"].rows
    n = Catalog(root).sql("select count(*) from datasets").column(0)[0].as_py()
    assert n == len(store.list()) >= 7
