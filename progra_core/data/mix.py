"""Stage ``mix``: D = ingested trajectories ∪ a share of the synthesized ones (``synthesize.mix``,
``synthesize.keep_ingested``). The sample is a stable hash of seed and trajectory id, so raising
the share only adds rows. A trajectory id present in both inputs is a reject, never a silent merge.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import pyarrow as pa

from progra_core import versioning
from progra_core.config import SynthesizeConfig
from progra_core.schemas import TRAJECTORIES, reject

__all__ = ["STAGE", "CODE_VERSION", "mix", "mix_config"]

STAGE = "mix"
CODE_VERSION = versioning.code_version("1", __name__)


def mix_config(cfg: SynthesizeConfig) -> dict:
    return {"mix": cfg.mix, "keep_ingested": cfg.keep_ingested, "seed": cfg.seed}


def _kept(trajectory_id: str, seed: int, share: float) -> bool:
    h = int(hashlib.sha256(f"mix:{seed}:{trajectory_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return h < share


def mix(ingested: pa.Table | None, synthesized: pa.Table, cfg: SynthesizeConfig) -> tuple[pa.Table, list[dict], dict]:
    """(trajectories, rejects, stats)."""
    rows = ingested.to_pylist() if ingested is not None and cfg.keep_ingested else []
    seen = {r["trajectory_id"] for r in rows}
    rejects, taken = [], 0
    for r in synthesized.to_pylist():
        if not _kept(r["trajectory_id"], cfg.seed, cfg.mix):
            continue
        if r["trajectory_id"] in seen:
            rejects.append(reject(STAGE, r["trajectory_id"], "duplicate_trajectory_id", "already among the ingested trajectories"))
            continue
        seen.add(r["trajectory_id"])
        rows.append(r)
        taken += 1
    stats = {"rows": len(rows), "rejects": len(rejects), "by_source": dict(Counter(r["source"] for r in rows)),
             "synthesized_in": synthesized.num_rows, "synthesized_kept": taken,
             "rows_in": (ingested.num_rows if ingested is not None and cfg.keep_ingested else 0) + synthesized.num_rows,
             "rejects_by_reason": dict(Counter(r["reason"] for r in rejects))}
    return pa.Table.from_pylist(rows, schema=TRAJECTORIES), rejects, stats
