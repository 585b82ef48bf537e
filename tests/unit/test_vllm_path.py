"""The vLLM path of PAG-RL, on CPU: TRL's engine contract served by the trainer's own policy,
its importance-sampling correction on long streams, the vLLM sampler's cuts, and the weight sync
that must never write the base weights (vLLM itself needs CUDA; docs/gpu.md says what a GPU run
must still confirm)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from progra_core.calls import Call
from progra_core.config import GRPOConfig
from progra_core.envs.bfcl import function_docs
from progra_core.train.rollout import Episode
from tests.support import CONFIG, Q1, Q2

FS = ["GorillaFileSystem"]


@pytest.fixture(scope="module")
def episode():
    return Episode("ep1", FS, json.dumps(CONFIG), json.dumps(function_docs(FS)), "A file system.",
                   [{"query": Q1, "steps": [[Call("cd", {"folder": "workspace"})], [Call("ls", {})]]},
                    {"query": Q2, "steps": [[Call("cat", {"file_name": "a.txt"})]]}])


class TRLEngineContract:
    """What ``trainer.vllm_generation`` (TRL's ``VLLMGeneration``) offers a rollout_func: weights
    synced by the trainer, ``generate(prompts, images, num_generations)`` returning (prompt ids,
    completion ids, per-token [[logprob]], token ids) with at most ``max_completion_length`` new
    tokens. vLLM needs CUDA, so here the contract is served by sampling the trainer's own policy
    (``hf_sampler``): the importance-sampling ratio must then be 1 on every model token."""

    def __init__(self, trainer, tok, temperature):
        self.trainer, self.tok, self.t = trainer, tok, temperature
        self.max_completion_length = 16384
        self.calls, self.syncs = [], 0

    def sync_weights(self):
        self.syncs += 1

    def generate(self, prompts, images, num_generations):
        from progra_core.train import rollout

        self.calls.append((len(prompts), self.max_completion_length, images, num_generations))
        gen = rollout.hf_sampler(self.trainer.model, self.tok, self.max_completion_length, self.t, seed=3)(prompts)
        return prompts, [g.ids for g in gen], [[[lp] for lp in g.logprobs] for g in gen], [[[i] for i in g.ids] for g in gen]


@pytest.mark.parametrize("mode", ["awareness", "raw"])
def test_vllm_rollouts_go_through_trls_engine_with_their_sampling_log_probs(tiny_llama, tmp_path, mode, episode):
    from progra_core.methods import recipe
    from progra_core.train import grpo as core

    cfg = GRPOConfig(batch_size=1, num_generations=2, max_actions=4, max_turn_actions=2, max_action_tokens=12,
                     max_steps=1, temperature=0.8, max_seq_len=4096, beta=0.0, precision="fp32")
    trainer, tok = core.build_trainer([episode], recipe("progra" if mode == "awareness" else "mt_grpo"), cfg,
                                      str(tiny_llama), None, tmp_path, docs_style="compact")
    # what TRL sets up with use_vllm (its VLLMGeneration itself needs vLLM on CUDA)
    engine = TRLEngineContract(trainer, tok, cfg.temperature)
    trainer.use_vllm, trainer.vllm_importance_sampling_correction = True, True
    trainer.vllm_generation, trainer._last_loaded_step = engine, -1
    out = trainer._generate_and_score_completions([{"prompt": episode.episode_id}] * 2)
    assert engine.syncs == 1 and engine.calls and engine.max_completion_length == 16384  # restored after each round
    assert all(n == 1 and limit == cfg.max_action_tokens and img is None for _, limit, img, n in engine.calls)
    model_tokens = (out["completion_mask"] * out["tool_mask"]).bool()
    assert model_tokens.sum() > 10
    # TRL's correction (grpo.importance_sampling: token_truncate): exp(trainer's recomputed logp - the engine's),
    # per model token
    ratio = out["importance_sampling_ratio"]
    assert ratio.shape == model_tokens.shape
    torch.testing.assert_close(ratio[model_tokens], torch.ones_like(ratio[model_tokens]), atol=1e-2, rtol=0)
    sampled = out["sampling_per_token_logps"]
    assert bool((sampled[model_tokens] < 0).all()) and bool((sampled[~model_tokens] == 0).all())


class SlightlyOff(TRLEngineContract):
    """An engine whose log-probs are each 0.01 nat below the trainer's, as bf16 vLLM kernels differ
    from the trainer's: small per token, large summed over a long multi-turn stream."""

    def generate(self, prompts, images, num_generations):
        p, ids, lps, toks = super().generate(prompts, images, num_generations)
        return p, ids, [[[lp[0] - 0.01] for lp in row] for row in lps], toks


@pytest.mark.parametrize("mode", ["token_truncate", "sequence_mask"])
def test_a_slight_sampler_mismatch_never_zeroes_a_long_rollout(tiny_llama, tmp_path, episode, mode):
    """TRL's default correction (sequence_mask, cap 3) sums the per-token log-ratio over every model
    token of a stream: 0.01 nat a token over ~200 tokens is a ratio of ~e^2 = 7, so whole rollouts
    are masked. The chosen default (grpo.importance_sampling: token_truncate) keeps every token at
    its own ratio, ~e^0.01."""
    from progra_core.methods import recipe
    from progra_core.train import grpo as core

    cfg = GRPOConfig(batch_size=1, num_generations=2, max_actions=4, max_turn_actions=2, max_action_tokens=64,
                     max_steps=1, temperature=1.0, max_seq_len=4096, beta=0.0, precision="fp32",
                     **({} if mode == "token_truncate" else {"importance_sampling": mode}))
    assert GRPOConfig().importance_sampling == "token_truncate"
    trainer, tok = core.build_trainer([episode], recipe("mt_grpo"), cfg, str(tiny_llama), None, tmp_path, docs_style="compact")
    engine = SlightlyOff(trainer, tok, cfg.temperature)
    trainer.use_vllm, trainer.vllm_generation, trainer._last_loaded_step = True, engine, -1
    out = trainer._generate_and_score_completions([{"prompt": episode.episode_id}] * 2)
    model_tokens = (out["completion_mask"] * out["tool_mask"]).bool()
    assert model_tokens.sum(1).min() > 120  # long streams (a random policy rarely ends a turn)
    ratio = out["importance_sampling_ratio"]
    if mode == "sequence_mask":  # the failure mode the default avoids: both rollouts dropped
        assert ratio.shape[1] == 1 and bool((ratio == 0).all())
    else:
        torch.testing.assert_close(ratio[model_tokens], torch.full_like(ratio[model_tokens], math.exp(0.01)), atol=2e-3, rtol=0)


def test_vllm_sampler_cuts_at_eos_and_keeps_unknown_log_probs_unknown():
    from progra_core.train.rollout import vllm_sampler

    class Engine:
        max_completion_length = 99

        def generate(self, prompts, images, num_generations):
            assert self.max_completion_length == 5
            return prompts, [[7, 2, 8], [9]], [[[-0.5], [-0.25], [-1.0]], [[None]]], None

    gen = vllm_sampler(Engine(), 5, eos_ids=[2])([[1], [1, 1]])
    assert gen[0].ids == [7, 2] and gen[0].logprobs == [-0.5, -0.25]
    assert gen[1].ids == [9] and gen[1].logprobs[0] != gen[1].logprobs[0]  # NaN: TRL zeroes its correction
    assert Engine.max_completion_length == 99

    class Short(Engine):
        def generate(self, prompts, images, num_generations):
            return prompts, [[7]], None, None

    with pytest.raises(RuntimeError, match="1 completions for 2 contexts"):
        vllm_sampler(Short(), 5)([[1], [1]])
    assert vllm_sampler(type("E", (Engine,), {"generate": lambda self, prompts, images, num_generations: (
        prompts, [[3]], None, None)})(), 5)([[1]])[0].logprobs is None



def test_vllm_weight_sync_never_writes_the_base_weights(tiny_llama):
    """TRL's sync merges the LoRA into the bf16 base in place and unmerges it, every step; in bf16
    that round trip is not exact, so over 200 steps the frozen base (under the policy and the KL
    reference) drifts away from the base evaluation loads. ``out_of_place_sync`` replaces it with
    an out-of-place merge: 200 syncs later the base is bit-identical, and vLLM receives the same
    names and the same merged values TRL's merge gives."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.generation.vllm_generation import VLLMGeneration

    from progra_core.train.grpo import out_of_place_sync

    def policy():
        torch.manual_seed(0)
        m = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16),
                           LoraConfig(r=8, lora_alpha=64, target_modules="all-linear"))
        for n, p in m.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.05)  # a trained adapter: B is no longer zero
        return m

    def engine(model):
        vg = SimpleNamespace(model=model, accelerator=SimpleNamespace(num_processes=1),
                             _dist=SimpleNamespace(is_fsdp=False, fsdp_version=None, gather_params=lambda ps: nullcontext()))
        vg._fix_param_name_to_vllm = lambda n, extra_prefixes=None: VLLMGeneration._fix_param_name_to_vllm(vg, n, extra_prefixes)
        vg._iter_named_params = lambda: VLLMGeneration._iter_named_params(vg)  # TRL's own sync
        return vg

    def base(model):
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}

    trl_model, ours_model = policy(), policy()
    trl_vg, ours_vg = engine(trl_model), engine(ours_model)
    before = base(trl_model)
    first_trl = [(n, t.clone()) for n, t in trl_vg._iter_named_params()]
    assert out_of_place_sync(ours_vg)
    first_ours = list(ours_vg._iter_named_params())
    assert [n for n, _ in first_ours] == [n for n, _ in first_trl] and all("lora" not in n for n, _ in first_ours)
    for (_, a), (_, b) in zip(first_trl, first_ours, strict=True):
        assert torch.equal(a, b)  # what vLLM receives: the same merged weights
    for _ in range(199):
        for _ in trl_vg._iter_named_params():
            pass
        for _ in ours_vg._iter_named_params():
            pass
    drifted = sum(not torch.equal(before[n], p) for n, p in base(trl_model).items())
    assert drifted > 0  # TRL's in-place merge/unmerge: the base has moved
    assert all(torch.equal(before[n], p) for n, p in base(ours_model).items())  # ours: bit-identical
