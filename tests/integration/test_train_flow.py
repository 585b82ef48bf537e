"""The train flow under a real Prefect server: sft -> grpo registered in ``models``, rollouts
queryable, reruns served from the cache, a grpo config change retrains grpo only, and a
from-base method (w/o PAG) skips SFT. The policy is a tiny random llama; data roles use echo."""

from __future__ import annotations

import json

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM

from progra_core.config import load_config
from tests.support import flow_overrides as _overrides

pytestmark = pytest.mark.usefixtures("prefect_server")

TRAIN = ["sft.max_steps=1", "sft.batch_size=2", "sft.max_length=4096", "grpo.batch_size=1", "grpo.num_generations=2",
         "grpo.max_actions=2", "grpo.max_action_tokens=80", "awareness.max_tokens=16", "grpo.max_turns=2", "grpo.episodes=2", "grpo.max_steps=2",
         "grpo.select=shortest", "awareness.limit=2"]


def test_train_flow_registers_models_and_rollouts(tmp_path, katan_echo, tiny_llama, monkeypatch):
    from flows.data import data_flow
    from flows.train import train_flow
    from storage import Catalog, store

    srv = katan_echo()
    root = tmp_path / "train"
    cfg = load_config("embedded", overrides=_overrides(root, srv.api_base, "openai/echo", f"models.policy={tiny_llama}", *TRAIN))
    data = data_flow(cfg)
    models = train_flow(data["sft_examples"], cfg)
    assert set(models) == {"sft", "grpo"}
    cat = Catalog(str(root))
    rows = {r["stage"]: r for r in cat.sql("select * from models").to_pylist()}
    assert rows["sft"]["parents"] == [data["sft_examples"].dataset_id] and rows["sft"]["method"] == "pag_sft"
    assert rows["grpo"]["parents"] == [data["trajectories"].dataset_id, rows["sft"]["model_id"]]
    for r in rows.values():
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), r["adapter_path"])
        card = (root / "models" / r["stage"] / r["model_id"] / "README.md").read_text()
        assert "More Information Needed" not in card and "library_name: peft" in card  # ours, not PEFT's blank template
        assert r["model_id"] in card and r["parents"][-1] in card and "Training data" in card
        base = json.loads((root / "models" / r["stage"] / r["model_id"] / "adapter_config.json").read_text())
        assert base["base_model_name_or_path"] == str(tiny_llama)
    assert '"kl_reference": "sft_adapter_copy"' in rows["grpo"]["metrics"]
    curve = cat.sql("select step, avg(total_reward) r, count(*) n from rollouts group by step order by step").to_pylist()
    assert [(c["step"], c["n"]) for c in curve] == [(1, 2), (2, 2)]
    assert cat.sql("select count(*) c from train_log where metric = 'kl'").to_pylist()[0]["c"] == 2
    assert cat.sql("select count(*) c from rollouts, unnest(actions) a").to_pylist()[0]["c"] >= 4
    # checkpoints (grpo.save_steps=1 in the profile) served only a resume: gone once the model is registered
    assert cfg.grpo.save_steps == 1 and not list((root / "checkpoints").rglob("checkpoint-*"))
    # the default tracker: TensorBoard event files per model, read back by TensorBoard's own reader
    from progra_core.train.tracking import read_scalars

    assert [s for s, _ in read_scalars(str(root / "tracking" / "grpo" / rows["grpo"]["model_id"]), "train/reward")] == [1, 2]
    assert [s for s, _ in read_scalars(str(root / "tracking" / "sft" / rows["sft"]["model_id"]), "train/loss")] == [1]

    written: list[str] = []
    real = store.DatasetStore.write
    monkeypatch.setattr(store.DatasetStore, "write", lambda self, stage, *a, **k: written.append(stage) or real(self, stage, *a, **k))
    again = train_flow(data["sft_examples"], cfg)
    assert written == [] and {k: v.dataset_id for k, v in again.items()} == {k: v.dataset_id for k, v in models.items()}

    cfg.grpo.max_actions = 3  # a GRPO knob: SFT stays cached, GRPO retrains
    changed = train_flow(data["sft_examples"], cfg)
    assert changed["sft"].dataset_id == models["sft"].dataset_id and changed["grpo"].dataset_id != models["grpo"].dataset_id
    assert sorted(written) == ["models", "rollouts", "train_log"]

    cfg.method = "wo_pag"  # PAG-RL from the base model: no SFT stage, reference = base
    base_run = train_flow(data["sft_examples"], cfg)
    assert set(base_run) == {"grpo"}
    assert '"kl_reference": "base_model"' in cat.sql(
        f"select metrics from models where model_id = '{base_run['grpo'].dataset_id}'").to_pylist()[0]["metrics"]

    # multi-process training: the stage stays one flow run, which launches the 2-process job (gloo),
    # watches it and registers exactly one adapter with the configured effective batch
    from flows.stage_flow import stage
    from progra_core.config import LaunchConfig

    cfg.method = "progra"
    cfg.sft.launch = LaunchConfig(num_processes=2)
    written.clear()
    before = cat.sql("select count(*) c from models where stage = 'sft'").to_pylist()[0]["c"]
    ids = stage("sft", [data["sft_examples"].dataset_id], config=cfg)
    assert ids["sft"] != models["sft"].dataset_id  # the process count is part of the model's fingerprint
    assert sorted(written) == ["models", "train_log"]
    row = cat.sql(f"select * from models where model_id = '{ids['sft']}'").to_pylist()
    assert len(row) == 1 and cat.sql("select count(*) c from models where stage = 'sft'").to_pylist()[0]["c"] == before + 1
    metrics = json.loads(row[0]["metrics"])
    assert (metrics["processes"], metrics["effective_batch"], metrics["steps"]) == (2, 2, 1)
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), row[0]["adapter_path"])
    assert cat.sql(f"select count(*) c from train_log where model_id = '{ids['sft']}' and metric = 'loss'").to_pylist()[0]["c"] == 1
