"""Flow ``data`` (Fig. 2): [synthesize ->] D -> segment -> awareness -> verify -> augment -> sft_data.

Every task is cached by its output's fingerprint, so changing one stage's config recomputes that
stage and the ones after it, nothing before.
"""

from __future__ import annotations

from prefect import flow

from flows.dispatch import gpu_stage
from progra_core.config import PipelineConfig, load_config
from storage import Catalog, DatasetRef
from tasks.augment import augment, augment_fingerprint
from tasks.awareness import awareness, awareness_fingerprint
from tasks.funnel import funnel
from tasks.ingest import ingest, ingest_fingerprint
from tasks.mix import mix, mix_fingerprint
from tasks.segment import segment, segment_fingerprint
from tasks.sft_data import sft_data, sft_data_fingerprint
from tasks.synthesize import synthesize, synthesize_fingerprint


@flow(name="data", log_prints=True)
def data_flow(config: PipelineConfig | None = None, profile: str = "embedded") -> dict[str, DatasetRef]:
    cfg = config or load_config(profile)
    root = cfg.storage.root
    D = ingest(cfg.ingest, root=root, dataset_id=ingest_fingerprint(cfg.ingest))
    synth = None
    if cfg.synthesize.enabled:  # Appendix B: verified trajectories from the executable envs
        synth = synthesize(cfg, root, dataset_id=synthesize_fingerprint(cfg))
        D = mix(cfg, root, D, synth, dataset_id=mix_fingerprint(cfg, D, synth))
    segments = segment(cfg, root, D, dataset_id=segment_fingerprint(cfg, D))
    raw = awareness(cfg, root, segments, dataset_id=awareness_fingerprint(cfg, segments))  # D^raw
    ver = gpu_stage(cfg, "verify", raw.dataset_id)["verified"]  # D^ver = rows with equal (GPU pool if LLM_ver is local)
    aug = augment(cfg, root, ver, dataset_id=augment_fingerprint(cfg, ver))  # D^aug
    sft = sft_data(cfg, root, aug, dataset_id=sft_data_fingerprint(cfg, aug))  # D^sft = D^aug ∪ D^cs
    refs = {"synthesized": synth} if synth is not None else {}
    refs |= {"trajectories": D, "segments": segments, "awareness": raw, "verified": ver, "augmented": aug, "sft_examples": sft}
    refs["funnel"] = funnel(root, list(refs.values()))
    Catalog(root, cfg.storage.catalog_path).refresh()
    return refs
