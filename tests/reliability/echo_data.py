"""Segments that an llm-katan echo server answers with valid awareness (tests and ``make bench``).

The echo backend answers with the last user message. Each segment here carries a progress note
(summary, plan, rationale) in its ``scenario``, which the awareness prompt puts in that message, so
the echoed answer passes the real ``parse_awareness``: one request per segment, and what is left to
test or time is the transport. No test-only parser setting is needed.
"""

from __future__ import annotations

from pathlib import Path


def note(k: int) -> str:
    return (f"<summary>The user keeps files in the workspace and asked for report number {k} to be found and "
            f"filed.</summary>\n<plan>Next the assistant opens the reports folder and files report {k} "
            "there.</plan>\n<rationale>The report has to be located before it can be moved.</rationale>")


def bfcl_segment_rows(limit: int = 3) -> list[dict]:
    """Real segments of the first BFCL base trajectories (executed ground truth)."""
    from progra_core.config import IngestConfig, SegmentConfig
    from progra_core.data import ingest, segment

    trajectories, _, _ = ingest.ingest(IngestConfig(limit=limit))
    table, _, _ = segment.segment(trajectories, SegmentConfig())
    return table.to_pylist()


def echo_segment_rows(n: int, base: list[dict]) -> list[dict]:
    """``n`` segments with ids ``echo-0000``...: real BFCL contexts, each with its own note."""
    return [{**base[k % len(base)], "segment_id": f"echo-{k:04d}", "scenario": note(k) + "\n\n" + (base[k % len(base)]["scenario"] or "")}
            for k in range(n)]


def write_echo_segments(root: Path | str, n: int, base: list[dict]) -> str:
    """Store ``n`` such segments as a ``segments`` dataset under ``root``; returns its id."""
    import pyarrow as pa

    from progra_core.data.segment import SEGMENTS
    from storage import DatasetStore

    table = pa.Table.from_pylist(echo_segment_rows(n, base), schema=SEGMENTS)
    return DatasetStore(str(root)).write("segments", table, config={"echo_segments": n}).dataset_id
