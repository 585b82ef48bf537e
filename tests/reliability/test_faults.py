"""Faults on the wire: the awareness stage over 320 segments against real llm-katan echo servers
that fail on purpose (HTTP 500 at random, 429 and 504 windows, answers slower than the client
timeout, an outage that outlasts every retry). Every segment must end as exactly one row, retries
must be on record, and nothing answered once may be asked again."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from tests.conftest import free_port
from tests.reliability.conftest import awareness_outcome, echo_config, run_awareness

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.server, pytest.mark.slow]

N = 320


def _one_row_each(rows: list[dict], rejects: list[dict]) -> None:
    ids = [r["segment_id"] for r in rows] + [r["input_id"] for r in rejects]
    assert len(ids) == N and max(Counter(ids).values()) == 1
    assert set(ids) == {f"echo-{k:04d}" for k in range(N)}


def _retries_on_record(rows: list[dict], stats: dict) -> int:
    """Per row (``retries``), per stage (manifest usage) and in the stage stats: the same count."""
    per_row = sum(r["retries"] for r in rows)
    assert stats["usage"]["generator"]["retries"] == per_row == stats["transport_retries"]
    return per_row


def test_random_http_500s(tmp_path, katan_echo, echo_segments):
    srv = katan_echo("--error-rate", "0.3")
    segs = echo_segments(tmp_path, N)
    out = run_awareness(echo_config(tmp_path, srv.api_base), segs)
    rows, rejects, stats = awareness_outcome(tmp_path, out["awareness"])
    _one_row_each(rows, rejects)
    assert rejects == [] and {r["attempts"] for r in rows} == {1}
    retries = _retries_on_record(rows, stats)
    # every attempt reached the server: N answers + one 500 per retry; ~30% of first tries fail
    assert srv.requests() == N + retries
    assert 0.15 * N < retries < 0.8 * N
    print(f"error-rate 0.3: {N} segments, {retries} retries, {srv.requests()} requests")


def _windows(katan_echo, port: int, stats, phases: list[tuple[tuple[str, ...], int]], log: list[str]):
    """Restart the server on ``port`` through ``phases``: (flags, requests after which the next
    phase starts). The stats file is shared, so ``requests()`` counts across restarts."""
    servers = [katan_echo(*phases[0][0], port=port, stats=stats)]

    def run():
        for (_, after), (flags, _) in zip(phases, phases[1:], strict=False):
            target = servers[-1].requests() + after
            while servers[-1].requests() < target:
                time.sleep(0.05)
            servers[-1].stop()
            log.append(f"{time.strftime('%X')} restart after {servers[-1].requests()} requests -> {' '.join(flags) or 'healthy'}")
            servers.append(katan_echo(*flags, port=port, stats=stats))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return servers, t


def test_rate_limit_bursts(tmp_path, katan_echo, echo_segments):
    """Two 429 windows (after 100 good answers, all 429 until a restart) and the gaps between
    servers (connection refused): the stage rides them out on retries and finishes in one run."""
    stats, log = tmp_path / "katan.stats.json", []
    port = free_port()
    phases = [(("--rate-limit-after", "100"), 130), (("--rate-limit-after", "100"), 130), ((), 0)]
    servers, mover = _windows(katan_echo, port, stats, phases, log)
    segs = echo_segments(tmp_path, N)
    out = run_awareness(echo_config(tmp_path, servers[0].api_base, "llm.max_retries=40", "llm.backoff_max_s=0.5"), segs)
    mover.join(5)
    rows, rejects, st = awareness_outcome(tmp_path, out["awareness"])
    _one_row_each(rows, rejects)
    assert rejects == [] and len(servers) == 3, log
    retries = _retries_on_record(rows, st)
    refused = servers[-1].requests() - N  # answers the servers gave that were not a completion: 429s
    assert refused >= 2 * 30 and retries >= refused  # retries also cover refused connections
    print(f"rate-limit bursts: {log}; {retries} retries for {refused} 429s")


def test_gateway_timeouts_then_slow_answers(tmp_path, katan_echo, echo_segments):
    """504s after 100 requests, then a server slower (3 s) than the client timeout (1 s), then a
    healthy one: 504s and client-side timeouts are both retried."""
    stats, log = tmp_path / "katan.stats.json", []
    port = free_port()
    phases = [(("--timeout-after", "100", "--latency-ms", "20"), 130), (("--latency-ms", "3000", "--max-concurrent", "64"), 16),
              (("--latency-ms", "20"), 0)]
    servers, mover = _windows(katan_echo, port, stats, phases, log)
    segs = echo_segments(tmp_path, N)
    cfg = echo_config(tmp_path, servers[0].api_base, "llm.timeout_s=1", "llm.max_retries=40", "llm.backoff_max_s=0.5")
    out = run_awareness(cfg, segs)
    mover.join(5)
    rows, rejects, st = awareness_outcome(tmp_path, out["awareness"])
    _one_row_each(rows, rejects)
    assert rejects == [] and len(servers) == 3, log
    retries = _retries_on_record(rows, st)
    assert retries >= 30 + 16, log
    assert sum(r["retries"] > 0 for r in rows) >= 16
    print(f"timeouts: {log}; {retries} retries")


def test_an_outage_past_every_retry_fails_the_stage_and_the_rerun_pays_only_the_rest(tmp_path, katan_echo, echo_segments):
    """150 answers, then 429 for good: the stage fails with StageIncomplete (no dataset is
    published, finished shards stay); once the endpoint is back, the rerun asks exactly the 170
    requests that never got an answer and the table has every segment once."""
    stats, port = tmp_path / "katan.stats.json", free_port()
    down = katan_echo("--rate-limit-after", "150", port=port, stats=stats)
    segs = echo_segments(tmp_path, N)
    cfg = echo_config(tmp_path, down.api_base, "llm.max_retries=2", "llm.shard_retry_delay_s=0.2")
    state = run_awareness(cfg, segs, return_state=True)
    assert state.is_failed()
    message = str(state.message)
    assert "StageIncomplete" in message or "unfinished" in message, message
    from storage import DatasetStore

    store = DatasetStore(str(tmp_path))
    assert store.list("awareness") == []
    stored = sum(t.num_rows for t in store.read_shards("awareness", _pending_id(store)).values())
    assert 0 < stored <= 150
    down.stop()

    up = katan_echo(port=port, stats=stats)
    before = up.requests()
    out = run_awareness(cfg, segs)
    asked = up.requests() - before
    rows, rejects, st = awareness_outcome(tmp_path, out["awareness"])
    _one_row_each(rows, rejects)
    assert asked == N - 150, (asked, st["usage"])
    usage = st["usage"]["generator"]
    assert usage["calls"] - usage["cached"] == asked and usage["cached"] == 150 - stored
    print(f"outage: {stored} rows in stored shards, 150 answers cached, rerun asked {asked}")


def _pending_id(store) -> str:
    (d,) = [p for p in store.fs.ls(store.shard_dir("awareness", ""), detail=False)]
    return d.rstrip("/").rsplit("/", 1)[-1]
