"""Flow ``data`` (Fig. 2): [synthesize ->] D -> segment -> awareness -> verify -> augment -> sft_data.

Every task is cached by its output's fingerprint, so changing one stage's config recomputes that
stage and the ones after it, nothing before.
"""

from __future__ import annotations

from prefect import flow

from flows.dispatch import gpu_stage
from progra_core.config import PipelineConfig, load_config
from storage import Catalog, DatasetRef
from tasks.funnel import funnel
from tasks.stage import run_data_stage as run
from tasks.synthesize import synthesize, synthesize_fingerprint


@flow(name="data", log_prints=True)
def data_flow(config: PipelineConfig | None = None, profile: str = "embedded") -> dict[str, DatasetRef]:
    cfg = config or load_config(profile)
    root = cfg.storage.root
    D = run("ingest", cfg)
    synth = None
    if cfg.synthesize.enabled:  # Appendix B: verified trajectories from the executable envs
        synth = synthesize(cfg, root, dataset_id=synthesize_fingerprint(cfg))
        D = run("mix", cfg, D, synth)
    segments = run("segment", cfg, D)  # τ' per function-call step
    raw = run("awareness", cfg, segments)  # D^raw: S^a by LLM_gen
    ver = gpu_stage(cfg, "verify", raw.dataset_id)["verified"]  # D^ver = rows with equal (GPU pool if LLM_ver is local)
    aug = run("augment", cfg, ver)  # D^aug
    sft = run("sft_data", cfg, aug)  # D^sft = D^aug ∪ D^cs
    refs = {"synthesized": synth} if synth is not None else {}
    refs |= {"trajectories": D, "segments": segments, "awareness": raw, "verified": ver, "augmented": aug, "sft_examples": sft}
    refs["funnel"] = funnel(root, list(refs.values()))
    Catalog(root, cfg.storage.catalog_path).refresh()
    return refs
