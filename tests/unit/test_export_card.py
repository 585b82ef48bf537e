"""`progra export -f hf` writes a folder that explains itself: HF splits as splits and a dataset
card (description, sources and their licenses, lineage, config, counts and rejects). Before, the
folder held one split with `split` as a column and no card at all."""

from __future__ import annotations

import pyarrow as pa
from typer.testing import CliRunner

from progra_core.schemas import reject
from storage import DatasetStore


def _root(tmp_path):
    store = DatasetStore(tmp_path / "root")
    traj = store.write("trajectories", pa.table({"trajectory_id": ["t1", "t2", "t3"], "source": ["bfcl", "bfcl", "tau2"]}),
                       config={"sources": ["bfcl", "tau2"]})
    segs = store.write("segments", pa.table({"segment_id": ["s1", "s2", "s3", "s4"]}), config={"step_mode": "per_turn"},
                       parents=[traj.dataset_id])
    sft = store.write("sft_examples", pa.table({"example_id": ["e1", "e2", "e3", "e4"], "kind": ["awareness"] * 3 + ["turn_end"],
                                                 "split": ["train", "train", "validation", "train"]}),
                      config={"validation_percent": 25}, parents=[segs.dataset_id],
                      rejects=[reject("sft_data", "e9", "too_long", "2,000 tokens"), reject("sft_data", "e8", "too_long", "x")])
    return store, traj, segs, sft


def test_hf_export_has_splits_and_a_card_from_the_lineage(tmp_path):
    from datasets import DatasetDict, load_from_disk

    from flows.cli import app

    store, traj, segs, sft = _root(tmp_path)
    out = tmp_path / "hf"
    r = CliRunner().invoke(app, ["export", sft.dataset_id, str(out), "-f", "hf", "--root", store.root_url])
    assert r.exit_code == 0, r.output
    ds = load_from_disk(str(out))
    assert isinstance(ds, DatasetDict) and sorted(ds) == ["train", "validation"]
    assert ds["train"].num_rows == 3 and ds["validation"].num_rows == 1 and "split" not in ds["train"].column_names
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: other\n")  # Apache-2.0 BFCL rows and MIT τ² rows together
    assert "| bfcl | 2 |" in card and "Apache 2.0" in card and "| tau2 | 1 |" in card and "MIT" in card
    for ref in (traj, segs, sft):  # the whole lineage, each dataset once
        assert card.count(f"| {ref.dataset_id} | {ref.stage} |") == 1
    assert '"validation_percent": 25' in card and "too_long 2" in card
    assert "| train | 3 |" in card and "| validation | 1 |" in card
    assert "D_sft = D_aug + D_cs" in card  # the stage's own description


def test_a_filtered_view_export_names_its_filter_and_one_license(tmp_path):
    from datasets import load_from_disk

    from flows.cli import app

    store = DatasetStore(tmp_path / "root")
    traj = store.write("trajectories", pa.table({"trajectory_id": ["t1"], "source": ["bfcl"]}), config={})
    store.write("segments", pa.table({"segment_id": ["s1", "s2"], "x": [1, 2]}), config={}, parents=[traj.dataset_id])
    out = tmp_path / "hf"
    r = CliRunner().invoke(app, ["export", "segments", str(out), "-f", "hf", "--where", "x = 2", "--root", store.root_url])
    assert r.exit_code == 0, r.output
    assert load_from_disk(str(out)).num_rows == 1
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\n") and "filtered by `x = 2`" in card and "| all rows (one split) | 1 |" in card


def test_export_model_writes_a_merged_folder_that_generates_like_base_plus_adapter(tmp_path, tiny_llama):
    """Before: a trained model existed only as a PEFT adapter whose config named a base by a path
    relative to one checkout; nothing wrote a plain model people can serve."""
    import json

    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from flows.cli import app
    from progra_core.schemas import MODELS

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter)
    store = DatasetStore(tmp_path / "root")
    traj = store.write("trajectories", pa.table({"trajectory_id": ["t1"], "source": ["bfcl"]}), config={})
    row = {"model_id": "abcdef0123456789", "base": str(tiny_llama), "method": "pag_sft",
           "adapter_path": store.put_model(adapter, "sft", "abcdef0123456789"),
           "stage": "sft", "parents": [traj.dataset_id], "metrics": json.dumps({"steps": 3}), "config": json.dumps({"lora_r": 4}),
           "created_at": None}
    store.write("models", pa.Table.from_pylist([row], schema=MODELS), dataset_id=row["model_id"], parents=[traj.dataset_id])
    out = tmp_path / "merged"
    r = CliRunner().invoke(app, ["export-model", "abcdef01", str(out), "--root", store.root_url])
    assert r.exit_code == 0, r.output
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").exists()
    merged = AutoModelForCausalLM.from_pretrained(out)
    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), adapter)
    tok = AutoTokenizer.from_pretrained(out)
    for prompt in ("List the files", "cd into docs and", "What is 2 + 2?"):
        ids = tok(prompt, return_tensors="pt").input_ids
        a = merged.generate(ids, max_new_tokens=12, do_sample=False, disable_compile=True)
        b = ref.generate(input_ids=ids, max_new_tokens=12, do_sample=False, disable_compile=True)
        assert a.tolist() == b.tolist()
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "pag_sft" in card and traj.dataset_id in card and "Apache 2.0" in card
    assert "| steps | 3 |" in card and '"lora_r": 4' in card
    again = CliRunner().invoke(app, ["export-model", "abcdef01", str(out), "--root", store.root_url])
    assert again.exit_code == 2 and "not empty" in again.output  # never writes over a folder
