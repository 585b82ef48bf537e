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


def test_the_vllm_extra_is_one_the_installed_trl_supports_on_the_makefiles_torch():
    """`pip install 'progra[vllm]'` once took the newest vLLM (outside TRL's range, with its own
    torch). The extra pins one version: inside the range the installed TRL declares for its own
    `vllm` extra, and (facts read from vLLM 0.30.0's metadata, stated in pyproject) built for the
    torch the Makefile installs. A CUDA box gets it from `make setup`."""
    import importlib.metadata
    import re
    import tomllib

    from packaging.requirements import Requirement

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (pin,) = [Requirement(r) for r in extras["vllm"]]
    (version,) = [s.version for s in pin.specifier if s.operator == "=="]
    trl = [Requirement(r) for r in importlib.metadata.requires("trl") if r.startswith("vllm")]
    assert trl and all(r.specifier.contains(version) for r in trl), (version, trl)
    makefile = (REPO / "Makefile").read_text()
    assert "pip install -q torch==2.13.0" in makefile.replace("$(PIP)", "pip") and "torch==2.13.0" in \
        (REPO / "pyproject.toml").read_text().split("vllm = [")[0].rsplit("# GPU rollouts", 1)[1]
    assert re.search(r"EXTRAS \?= dev,dist\$\(shell nvidia-smi -L .*echo ,vllm\)", makefile)
