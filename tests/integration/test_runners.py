"""The paid stages' shard tasks on each task runner: threads (the default), a Dask
``distributed.LocalCluster`` with worker processes, and a single-node Ray cluster. Same segments,
same endpoint: every runner must publish the same dataset id with the same rows, and the server
must see exactly one request per segment from each (no shard runs twice).

The same runs check the endpoint limit across workers. Each worker process has its own gateway
with ``llm.concurrency=2``. On Ray, without ``llm.global_limit``, two processes together exceed 2
requests in flight, which shows the measurement can see a violation. On Dask, with the limit (a
Prefect global concurrency limit on the test's Prefect server), the endpoint never sees more than
2. A counting reverse proxy in front of the real llm-katan server measures what reaches it."""

from __future__ import annotations

import time

import pytest

from tests.proxy import CountingProxy
from tests.reliability import echo_data
from tests.reliability.conftest import awareness_outcome, echo_config, run_awareness

pytestmark = pytest.mark.usefixtures("prefect_server")

N, LIMIT = 32, 2  # segments (4 shards of 8 over 2 workers); requests in flight per endpoint


@pytest.mark.slow
def test_thread_dask_and_ray_runners_write_the_same_dataset_with_no_duplicate_requests(tmp_path, katan_echo):
    pytest.importorskip("prefect_dask")
    pytest.importorskip("prefect_ray")
    srv = katan_echo("--latency-ms", "300")
    proxy = CountingProxy(srv.api_base.removesuffix("/v1"))
    base = echo_data.bfcl_segment_rows()
    ids, rows, asked, most, wall = {}, {}, {}, {}, {}
    try:
        for runner, shared in (("thread", False), ("dask", True), ("ray", False)):
            root = tmp_path / runner
            segs = echo_data.write_echo_segments(root, N, base)
            cfg = echo_config(root, proxy.api_base, f"dispatch.task_runner={runner}", "dispatch.max_workers=2",
                              "awareness.shard_size=8", f"llm.concurrency={LIMIT}", f"llm.global_limit={str(shared).lower()}")
            before = srv.settled()
            proxy.reset()
            t = time.perf_counter()
            ids[runner] = run_awareness(cfg, segs)["awareness"]
            wall[runner] = time.perf_counter() - t
            asked[runner], most[runner] = srv.settled() - before, proxy.most
            got, rejects, stats = awareness_outcome(root, ids[runner])
            rows[runner] = sorted((r["segment_id"], r["summary"], r["plan"]) for r in got)
            assert rejects == [] and stats["shards"] == 4
    finally:
        proxy.stop()
    print(f"wall s (spin-up included): {wall}; requests: {asked}; most in flight: {most}")
    assert ids["dask"] == ids["thread"] == ids["ray"]
    assert rows["dask"] == rows["thread"] == rows["ray"] and len(rows["thread"]) == N
    assert asked == {"thread": N, "dask": N, "ray": N}
    assert most["thread"] <= LIMIT  # one process: its shard threads share one semaphore
    assert most["ray"] > LIMIT  # two worker processes, each within its own limit, exceed it together
    assert most["dask"] <= LIMIT  # the global limit holds across the two Dask worker processes
