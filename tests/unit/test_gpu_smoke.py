"""The GPU smoke script runs end to end at a toy geometry on CPU: a random policy from a shipped
layout, SFT from real BFCL rows, PAG-RL in real environments, and the numbers it reports."""
import importlib.util
import json

import pytest

from tests.conftest import REPO


def test_gpu_smoke_runs_the_worst_case_at_tiny_geometry(embedded_model, tmp_path):
    """Symptom: a random policy never wrote a parsable call, so every turn ended after one action and
    the smoke check never met a long stream; its timing included the warm-up step. The scripted
    policy plays every episode to its action limit, and the warm-up step is left out."""
    spec = importlib.util.spec_from_file_location("gpu_smoke", REPO / "scripts" / "gpu_smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    out = smoke.main(["--tiny", "--sft-steps", "1", "--rl-steps", "2", "--json", str(tmp_path / "smoke.json")])
    assert json.loads((tmp_path / "smoke.json").read_text()) == out
    from progra_core.train.memory import load_arch

    assert out["device"] == "cpu" and out["policy"] == "scripted"
    assert load_arch(out["arch"]).params > 1e9  # a shipped paper-size layout, shrunk by --tiny for the run itself
    assert out["params"] < load_arch(out["arch"]).params
    assert out["sft"]["steps"] == 1 and out["sft"]["seconds_per_step"] > 0
    g = out["grpo"]
    assert g["steps"] == 2 and g["measured_steps"] == 1 and g["warmup_s"] > 0 and g["seconds_per_step"] > 0
    assert g["rollouts"] == 2 * g["batch"] * g["num_generations"] == 4
    assert g["actions_per_rollout_max"] == g["max_actions"]  # no turn ended by itself: the action limit stopped it
    assert g["model_tokens_per_rollout"] == g["max_actions"] * g["max_action_tokens"]  # every action at full length
    assert 0 < g["context_used"] <= 1 and g["longest_context"] > g["max_actions"] // 2 * g["max_action_tokens"]
    assert "multi-GPU (FSDP / DeepSpeed)" in out["not_exercised"] and out["paper_table6"]["progra_gpu_s_per_step"] > 0
    with pytest.raises(SystemExit):
        smoke.main(["--tiny", "--rl-steps", "1"])  # nothing left to measure after the warm-up


def test_under_vllm_the_scripted_policy_is_forced_by_a_regex_the_engine_cannot_leave(embedded_model):
    """Symptom: with --vllm colocate the smoke check sampled the random model, so its vLLM streams
    ended after one action and never came near the context limit. Now the engine TRL hands our
    sampler decodes under a regex of the scripted note (TRL's structured_outputs_regex) with only
    the note's own token ids allowed (vLLM's allowed_token_ids): whatever a random model prefers,
    it writes the note and a valid call at full length."""
    import re
    import types

    from transformers import AutoTokenizer

    from progra_core.config import load_config
    from progra_core.prompts.policy import parse_action, template_ok

    spec = importlib.util.spec_from_file_location("gpu_smoke", REPO / "scripts" / "gpu_smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    tok = AutoTokenizer.from_pretrained(embedded_model)
    limit = load_config("paper").grpo.max_action_tokens
    scripted = smoke.ScriptedWorstCase(tok, limit - smoke.FORCED_ROOM)
    regex, allowed = scripted.forced(tok)
    text = tok.decode(scripted.ids[:-1])
    assert re.fullmatch(regex, text) and not re.fullmatch(regex, text[:-1]) and "\n" not in regex.replace("\\n", "")
    assert set(scripted.ids) == set(allowed) and len(scripted.ids) == limit - smoke.FORCED_ROOM  # full length, room left
    # the longest way to spell the text with the allowed tokens (what a random engine might take)
    # still closes its answer within the action's limit, the eos included
    pieces = {tok.decode([i]) for i in allowed if i != tok.eos_token_id}
    most = [0] + [-1] * len(text)
    for i in range(len(text)):
        if most[i] >= 0:
            for piece in pieces:
                if piece and text.startswith(piece, i):
                    most[i + len(piece)] = max(most[i + len(piece)], most[i] + 1)
    assert len(scripted.ids) - 1 <= most[-1] and most[-1] + 1 <= limit, (most[-1], limit)
    action = parse_action(text)  # what the rollout makes of it: the note's format, one valid call
    assert template_ok(text, awareness=True) and [c.name for c in action.calls] == ["pwd"] and action.parse_error is None
    seen = {}

    def factory(engine, *a, **k):
        seen.update(regex=engine.structured_outputs_regex, kwargs=engine.generation_kwargs)
        return "sampler"

    engine = types.SimpleNamespace(structured_outputs_regex=None, generation_kwargs={"top_k": 5})
    assert smoke.forcing(factory, regex, allowed)(engine, 1024) == "sampler"
    assert seen == {"regex": regex, "kwargs": {"top_k": 5, "allowed_token_ids": allowed}}


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
