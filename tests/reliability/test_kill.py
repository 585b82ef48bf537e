"""Kill -9 mid-stage: ``progra stage awareness`` in a real subprocess is SIGKILLed after some shards
are stored; the rerun completes, its table equals an uninterrupted run's, and it asks the server
exactly once for every request that had no cached answer at the moment of the kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.reliability.conftest import awareness_outcome, echo_config, run_awareness

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.server, pytest.mark.slow]

N = 320
REPO = Path(__file__).resolve().parents[2]
SAME = ("awareness_id", "segment_id", "generator", "prompt_version", "summary", "plan", "rationale", "attempts")


def _cli(args: list[str]) -> subprocess.Popen:
    """``progra`` in its own process group, on the test's Prefect server (no ephemeral server to
    start in the child)."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _cached_answers(root: Path) -> int:
    import diskcache

    with diskcache.Cache(str(root / "llm_cache")) as c:
        return len(c)


def test_kill_9_mid_stage_then_rerun(tmp_path, katan_echo, echo_segments):
    from storage import DatasetStore

    reference, slow = katan_echo(), katan_echo("--latency-ms", "150", "--max-concurrent", "16")
    ref_root, root = tmp_path / "ref", tmp_path / "killed"
    clean = run_awareness(echo_config(ref_root, reference.api_base), echo_segments(ref_root, N))["awareness"]
    clean_rows, _, _ = awareness_outcome(ref_root, clean)
    assert len(clean_rows) == N

    cfg = echo_config(root, slow.api_base, "llm.concurrency=4")
    segs = echo_segments(root, N)
    conf = tmp_path / "killed.yaml"
    conf.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    args = ["stage", "awareness", "--input", segs, "--config", str(conf)]
    store = DatasetStore(str(root))
    shard_dir = root / "shards" / "awareness"
    proc = _cli(args)
    deadline = time.time() + 180
    while time.time() < deadline and len(list(shard_dir.rglob("shard-*.parquet"))) < 3:
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    stored = len(list(shard_dir.rglob("shard-*.parquet")))
    assert 3 <= stored < N // 16, "the kill must land mid-stage"
    assert store.list("awareness") == []  # nothing half-written is published
    asked_before = slow.settled()  # requests in flight at the kill are still counted by the server
    cached = _cached_answers(root)
    unfinished = N - cached  # every segment is one request; an answered one is in the cache

    proc = _cli(args)
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    asked = slow.requests() - asked_before
    (ref,) = store.list("awareness")
    rows, rejects, stats = awareness_outcome(root, ref.dataset_id)
    print(f"kill -9: {stored} shards stored, {cached} answers cached at the kill, "
          f"{asked_before} requests before, {asked} on the rerun (unfinished {unfinished})")
    assert asked == unfinished
    usage = stats["usage"]["generator"]
    assert usage["calls"] - usage["cached"] == asked and stats["shards_reused"] >= stored
    assert rejects == []
    key = lambda r: r["segment_id"]  # noqa: E731
    assert [{k: r[k] for k in SAME} for r in sorted(rows, key=key)] == [{k: r[k] for k in SAME} for r in sorted(clean_rows, key=key)]

    # and once more: nothing left to do, nothing asked
    again = run_awareness(cfg, segs)
    assert again["awareness"] == ref.dataset_id and slow.requests() == asked_before + asked
