"""The GPU smoke script runs end to end at a toy geometry on CPU: a random policy from a shipped
layout, SFT from real BFCL rows, PAG-RL in real environments, and the numbers it reports."""
import importlib.util
import json

from tests.conftest import REPO


def test_gpu_smoke_runs_at_tiny_geometry(embedded_model, tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_smoke", REPO / "scripts" / "gpu_smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    out = smoke.main(["--tiny", "--sft-steps", "1", "--rl-steps", "1", "--json", str(tmp_path / "smoke.json")])
    assert json.loads((tmp_path / "smoke.json").read_text()) == out
    assert out["device"] == "cpu" and out["arch"] == "Salesforce/xLAM-2-3b-fc-r"
    assert out["sft"]["steps"] == 1 and out["sft"]["seconds_per_step"] > 0
    g = out["grpo"]
    assert g["steps"] == 1 and g["rollouts"] == g["batch"] * g["num_generations"] == 2
    assert g["model_tokens_per_step"] > 0 and g["model_tokens_per_rollout"] <= g["max_actions"] * 16
    assert out["paper_table6"]["progra_gpu_s_per_step"] == 2900
