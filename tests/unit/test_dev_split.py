"""scripts/dev_split.py: the dev fold is taken out of D before sft_data, so no variant trains on a
trajectory it is scored on, and each variant's overrides reach the stage's own function."""
import importlib.util

import pyarrow as pa

from progra_core.config import IngestConfig, SegmentConfig
from progra_core.config.loading import load_config
from progra_core.data.awareness import template_awareness
from progra_core.data.ingest import ingest
from progra_core.data.segment import segment
from storage import DatasetStore
from tests.conftest import REPO


def _script():
    spec = importlib.util.spec_from_file_location("dev_split", REPO / "scripts" / "dev_split.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_dev_fold_never_reaches_a_variants_sft_data(tmp_path):
    dev = _script()
    table, _, _ = ingest(IngestConfig(bfcl_categories=["base"], bfcl_split="train", limit=8, step_mode="per_turn"))
    segs, _, _ = segment(table, SegmentConfig())
    segs = segs.to_pylist()
    fold = {s["trajectory_id"] for s in segs if dev.in_fold(s["trajectory_id"], 2)}
    assert fold and fold != {s["trajectory_id"] for s in segs}  # both sides non-empty (a hash of the id: the same on every run)
    augmented = []
    for s in segs[::2]:  # a note on every other segment, as verification keeps some
        summary, plan, rationale = template_awareness(s)
        augmented.append({"aug_id": s["segment_id"], "awareness_id": s["segment_id"], "segment_id": s["segment_id"],
                          "op": "none", "text": summary, "summary": summary, "plan": plan, "rationale": rationale,
                          "tools": s["tools"], "target_calls": s["target_calls"], "history": None, "query": None,
                          "prior_steps": None})
    store = DatasetStore(str(tmp_path))
    seg_id = store.write("segments", pa.Table.from_pylist(segs), dataset_id="segs").dataset_id
    aug_id = store.write("augmented", pa.Table.from_pylist(augmented), dataset_id="augs").dataset_id

    built = {}
    for over in ([], ["sft_data.cold_start_ratio=0", "sft_data.turn_ends=false"]):
        cfg = load_config("embedded", overrides=[f"storage.root={tmp_path}", *over])
        data_id = dev.build(store, cfg, aug_id, seg_id, 2, over)
        assert dev.build(store, cfg, aug_id, seg_id, 2, over) == data_id  # cached under its fingerprint
        rows = store.read(store.find(data_id)).to_pylist()
        assert rows and not {r["trajectory_id"] for r in rows} & fold
        built[tuple(over)] = {r["kind"] for r in rows}
    assert built[()] == {"awareness", "cold_start", "turn_end"}
    assert built[("sft_data.cold_start_ratio=0", "sft_data.turn_ends=false")] == {"awareness"}
