"""Flow ``data`` (Fig. 2): [synthesize ->] D -> segment -> awareness -> verify -> augment -> sft_data.

Every task is cached by its output's fingerprint, so changing one stage's config recomputes that
stage and the ones after it, nothing before. Every stage starts the same way (``stage``), in this
process or, for verify with a local LLM_ver under ``dispatch.mode: work_pool``, on the GPU pool.
"""

from __future__ import annotations

from prefect import flow

from flows.dispatch import stage
from progra_core.config import PipelineConfig, load_config
from storage import DatasetRef
from tasks.funnel import funnel
from tasks.runtime import refresh_catalog


@flow(name="data", log_prints=True)
def data_flow(config: PipelineConfig | None = None, profile: str = "embedded") -> dict[str, DatasetRef]:
    cfg = config or load_config(profile)
    D = stage(cfg, "ingest")
    synth = None
    if cfg.synthesize.enabled:  # Appendix B: verified trajectories from the executable envs
        synth = stage(cfg, "synthesize")
        D = stage(cfg, "mix", D, synth)
    segments = stage(cfg, "segment", D)  # τ' per function-call step
    raw = stage(cfg, "awareness", segments)  # D^raw: S^a by LLM_gen
    ver = stage(cfg, "verify", raw)  # D^ver = rows with equal (GPU pool if LLM_ver is local)
    aug = stage(cfg, "augment", ver)  # D^aug
    sft = stage(cfg, "sft_data", aug)  # D^sft = D^aug ∪ D^cs
    refs = {"synthesized": synth} if synth is not None else {}
    refs |= {"trajectories": D, "segments": segments, "awareness": raw, "verified": ver, "augmented": aug, "sft_examples": sft}
    refs["funnel"] = funnel(cfg.storage.root, list(refs.values()))
    refresh_catalog(cfg)
    return refs
