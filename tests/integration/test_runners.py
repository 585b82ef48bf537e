"""The paid stages' shard tasks on each task runner: threads (the default), a Dask
``distributed.LocalCluster`` with worker processes, and a single-node Ray cluster. Same segments,
same endpoint: every runner must publish the same dataset id with the same rows, and the server
must see exactly one request per segment from each (no shard runs twice)."""

from __future__ import annotations

import time

import pytest

from tests.reliability import echo_data
from tests.reliability.conftest import awareness_outcome, echo_config, run_awareness

pytestmark = pytest.mark.usefixtures("prefect_server")

N = 32  # segments; 4 shards of 8 over 2 workers


def _settled(srv) -> int:
    last = -1
    while (now := srv.requests()) != last:
        last = now
        time.sleep(0.3)
    return now


@pytest.mark.slow
def test_thread_dask_and_ray_runners_write_the_same_dataset_with_no_duplicate_requests(tmp_path, katan_echo):
    pytest.importorskip("prefect_dask")
    pytest.importorskip("prefect_ray")
    srv = katan_echo()
    base = echo_data.bfcl_segment_rows()
    ids, rows, asked, wall = {}, {}, {}, {}
    for runner in ("thread", "dask", "ray"):
        root = tmp_path / runner
        segs = echo_data.write_echo_segments(root, N, base)
        cfg = echo_config(root, srv.api_base, f"dispatch.task_runner={runner}", "dispatch.max_workers=2",
                          "awareness.shard_size=8")
        before = _settled(srv)
        t = time.perf_counter()
        ids[runner] = run_awareness(cfg, segs)["awareness"]
        wall[runner] = time.perf_counter() - t
        asked[runner] = _settled(srv) - before
        got, rejects, stats = awareness_outcome(root, ids[runner])
        rows[runner] = sorted((r["segment_id"], r["summary"], r["plan"]) for r in got)
        assert rejects == [] and stats["shards"] == 4
    print(f"wall s (spin-up included): {wall}; requests: {asked}")
    assert ids["dask"] == ids["thread"] == ids["ray"]
    assert rows["dask"] == rows["thread"] == rows["ray"] and len(rows["thread"]) == N
    assert asked == {"thread": N, "dask": N, "ray": N}
