"""Training on CPU with a tiny random llama: recipes, length fitting, one SFT step and one GRPO step
end to end (adapter saved and reloaded, frozen SFT reference, rollouts with advantages)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from progra_core.config import GRPOConfig, PipelineConfig, SFTConfig
from progra_core.methods import RECIPES, recipe
from progra_core.train.sft import fit_length, sft_rows, train_sft
from tests.support import EXAMPLES, GOLD, Scripted, act, bfcl_episode

SEG = {"segment_id": "t1#t0s0", "trajectory_id": "t1", "split": "train", "tools": "[]", "scenario": "", "turn_index": 0,
       "step_index": 0, "future": [{"role": "tool", "content": "ok"}],
       "history": [{"role": "user", "content": "old request"}, {"role": "assistant", "content": "[ls()]"}],
       "query": "go to docs", "prior_steps": [], "target_calls": [{"text": "cd(folder='docs')"}]}
@pytest.mark.parametrize("method,sft,grpo,start,loss,scale", [
    ("reasoning", None, None, "sft", "grpo", "group"),
    ("sft", "plain", None, "sft", "grpo", "group"),
    ("st_grpo", None, "single", "base", "grpo", "group"),
    ("st_dr_grpo", None, "single", "base", "dr_grpo", "none"),
    ("mt_grpo", None, "raw", "base", "grpo", "group"),
    ("mt_dr_grpo", None, "raw", "base", "dr_grpo", "none"),
    ("progra", "pag", "awareness", "sft", "grpo", "group"),
    ("wo_pag", None, "awareness", "base", "grpo", "group"),
    ("wo_pag_rl", "pag", None, "sft", "grpo", "group"),
    ("pag_mt_grpo", "pag", "raw", "sft", "grpo", "group"),
    ("sft_mt_grpo", "plain", "raw", "sft", "grpo", "group"),
])
def test_each_method_builds_its_trainer_inputs(method, sft, grpo, start, loss, scale):
    r = recipe(method)
    assert (r.sft, r.grpo, r.loss_type("grpo"), r.scale_rewards()) == (sft, grpo, loss, scale)
    if grpo:
        assert r.grpo_from == start
    rows = sft_rows(r, EXAMPLES, [SEG, {**SEG, "segment_id": "h#t0s0", "split": "held_out"}])
    if sft == "pag":
        assert [x["id"] for x in rows] == [e["example_id"] for e in EXAMPLES]
    elif sft == "plain":  # the SFT baseline: raw prefix, calls only, never held-out scenarios; and the turn's end
        assert [x["kind"] for x in rows] == ["plain", "turn_end"]
        assert rows[0]["completion"][0]["content"] == "<answer>[cd(folder='docs')]</answer>"
        assert rows[1]["completion"][0]["content"] == "<answer>I have completed your request.</answer>"
        assert "<summary>" not in rows[0]["prompt"][0]["content"] and rows[0]["prompt"][1]["content"] == "old request"
    else:
        assert rows == []
    assert set(RECIPES) == set(PipelineConfig.model_fields["method"].annotation.__args__)


def test_fit_length_drops_oldest_history_then_rejects(embedded_model):
    tok = AutoTokenizer.from_pretrained(embedded_model)
    history = [m for i in range(30) for m in ({"role": "user", "content": f"old turn {i} " * 20},
                                             {"role": "assistant", "content": "[ls()]"})]
    row = {"id": "x", "split": "train", "prompt": [{"role": "system", "content": "S"}, *history, {"role": "user", "content": "now"}],
           "completion": [{"role": "assistant", "content": "<answer>[ls()]</answer>"}]}
    kept, rejects, st = fit_length([row], tok, 300)
    assert st["trimmed"] == 1 and not rejects and kept[0]["tokens"] <= 300
    p = kept[0]["prompt"]
    assert p[0]["content"] == "S" and p[-1]["content"] == "now" and p[1]["role"] == "user" and "old turn 29" in p[-3]["content"]
    kept, rejects, st = fit_length([{**row, "prompt": [row["prompt"][0], {"role": "user", "content": "x " * 500}]}], tok, 300)
    assert not kept and rejects[0]["reason"] == "too_long"


@pytest.fixture(scope="module")
def sft_adapter(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "adapter"
    cfg = SFTConfig(max_steps=1, batch_size=2, learning_rate=0.05, max_length=256)
    metrics = train_sft(sft_rows(recipe("progra"), EXAMPLES, []), str(tiny_llama), cfg, out)
    return out, metrics


def test_one_sft_step_saves_a_reloadable_adapter(tiny_llama, sft_adapter):
    from peft import PeftModel

    out, m = sft_adapter
    assert m["steps"] == 1 and m["train_examples"] == 5 and m["validation_examples"] == 1
    assert m["eval_loss_before"] is not None and m["eval_loss_after"] is not None and m["train_loss"] > 0
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(out))
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().max()) > 0 for p in lora_b)  # B starts at zero: the step moved it
    assert any(e.get("loss") is not None for e in m["log_history"])


def test_one_grpo_step_from_the_sft_adapter_keeps_it_as_the_kl_reference(tiny_llama, sft_adapter, tmp_path, monkeypatch):
    """Generation 0 plays the gold script, generation 1 a wrong one: different returns, non-zero
    advantages, so the policy adapter moves while TRL's frozen ``ref`` copy stays the SFT adapter."""
    from peft import PeftModel

    from progra_core.train import grpo as core
    from progra_core.train import rollout

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    bad = [act("lost", "[cd(folder='nowhere')]"), act("lost", "no")] * 4
    gold, wrong = Scripted(tok, GOLD), Scripted(tok, bad)

    def sampler(*a, **k):
        def generate(contexts):
            assert len(contexts) == 2  # lockstep: one batch per round with both rollouts of the group
            return gold(contexts[:1]) + wrong(contexts[1:])
        return generate

    monkeypatch.setattr(rollout, "hf_sampler", sampler)
    cfg = GRPOConfig(batch_size=1, num_generations=2, max_actions=3, max_steps=1, learning_rate=0.05, beta=0.001,
                     max_seq_len=4096)
    metrics, table = core.train_grpo([bfcl_episode()], recipe("progra"), cfg, str(tiny_llama), str(sft_adapter[0]), tmp_path / "g",
                                     docs_style="compact")
    assert metrics["steps"] == 1 and metrics["kl_reference"] == "sft_adapter_copy"
    assert metrics["ref_equals_sft_adapter"] is True and metrics["policy_max_weight_change"] > 0
    rows = table.to_pylist()
    assert [r["generation"] for r in rows] == [0, 1] and {r["step"] for r in rows} == {1}
    assert rows[0]["total_reward"] > rows[1]["total_reward"]
    assert rows[0]["advantage"] > 0 > rows[1]["advantage"]  # group-normalised R(τ)
    assert rows[0]["n_actions"] == 3 and rows[0]["actions"][0]["calls"] == ["cd(folder='workspace')"]
    assert rows[0]["turns_passed"][0] is True and rows[1]["turns_passed"][0] is False
    assert any("kl" in e for e in metrics["log_history"]) and any("rewards/reward_acc/mean" in e for e in metrics["log_history"])
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(tmp_path / "g"))  # reloadable


def test_grpo_from_the_base_model_uses_dr_grpo_and_the_base_as_reference(tiny_llama, tmp_path):
    from progra_core.train import grpo as core

    cfg = GRPOConfig(batch_size=1, num_generations=2, max_actions=1, max_action_tokens=8, max_steps=1, max_seq_len=4096)
    metrics, table = core.train_grpo([bfcl_episode()], recipe("mt_dr_grpo"), cfg, str(tiny_llama), None, tmp_path / "g",
                                     docs_style="compact")
    assert metrics["kl_reference"] == "base_model" and table.num_rows == 2
    assert all(r["mode"] == "raw" and r["n_actions"] == 1 and r["tokens"] <= 8 for r in table.to_pylist())
    assert (tmp_path / "g" / "adapter_config.json").exists()
    assert torch.isfinite(torch.tensor(table.column("advantage").to_pylist())).all()


@pytest.mark.parametrize("loss", ["progra", "mt_dr_grpo"])
def test_grpo_micro_batches_accumulate_to_the_same_step(tiny_llama, sft_adapter, tmp_path, monkeypatch, loss):
    """batch 1 x 2 generations scored in micro-batches of 1 (2 accumulated passes) gives the step
    one pass over both streams gives: the same loss and gradient norm, i.e. the same effective batch."""
    from progra_core.train import grpo as core
    from progra_core.train import rollout

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    bad = [act("lost", "[cd(folder='nowhere')]"), act("lost", "no")] * 4

    def sampler(*a, **k):
        gold, wrong = Scripted(tok, GOLD), Scripted(tok, bad)

        def generate(contexts):
            assert len(contexts) == 2  # the whole group is generated together whatever the micro-batch
            return gold(contexts[:1]) + wrong(contexts[1:])
        return generate

    monkeypatch.setattr(rollout, "hf_sampler", sampler)
    out = {}
    for micro in (None, 1):
        cfg = GRPOConfig(batch_size=1, num_generations=2, max_actions=3, max_steps=1, learning_rate=0.05, beta=0.001,
                         max_seq_len=4096, micro_batch_size=micro, dr_grpo_tokens=64)
        assert cfg.accumulation_steps == (1 if micro is None else 2)
        init = None if loss == "mt_dr_grpo" else str(sft_adapter[0])
        metrics, table = core.train_grpo([bfcl_episode()], recipe(loss), cfg, str(tiny_llama), init, tmp_path / f"g{micro}",
                                         docs_style="compact")
        step = next(e for e in metrics["log_history"] if "grad_norm" in e)
        out[micro] = (step["loss"], step["grad_norm"], [r["advantage"] for r in table.to_pylist()])
    assert out[1][2] == out[None][2]
    assert out[1][0] == pytest.approx(out[None][0], rel=1e-3, abs=1e-6)
    # bf16 autocast rounds differently when the LM head scores one stream's tokens or both at once
    # (0.15 % measured); an accumulation that forgot to divide would be off by 2x
    assert out[1][1] == pytest.approx(out[None][1], rel=5e-3)
    with pytest.raises(ValueError, match="must divide"):
        GRPOConfig(batch_size=1, num_generations=4, micro_batch_size=3)


def test_sft_micro_batches_accumulate_to_the_same_step(tiny_llama, tmp_path):
    """batch 4 as 2 micro-batches of 2 (or 4 of 1): the first step's loss and gradient norm equal
    one pass over all 4 (token-weighted, as TRL/transformers accumulate), so the effective batch is 4."""
    rows = sft_rows(recipe("progra"), EXAMPLES, [])
    got = {}
    for micro in (None, 2, 1):
        cfg = SFTConfig(max_steps=1, batch_size=4, micro_batch_size=micro, learning_rate=0.05, max_length=256,
                        lora_dropout=0.0, precision="fp32")  # no dropout masks or bf16 rounding to differ
        m = train_sft(rows, str(tiny_llama), cfg, tmp_path / f"a{micro}")
        got[micro] = next(e for e in m["log_history"] if "grad_norm" in e)
    for micro in (2, 1):
        assert got[micro]["loss"] == pytest.approx(got[None]["loss"], rel=1e-3)
        assert got[micro]["grad_norm"] == pytest.approx(got[None]["grad_norm"], rel=1e-3)
    with pytest.raises(ValueError, match="must divide"):
        SFTConfig(batch_size=4, micro_batch_size=3)


def test_on_cpu_the_lm_head_scores_only_the_positions_that_carry_the_loss(tiny_llama, monkeypatch):
    """Symptom: off Triton devices TRL's fused head projected every position onto the vocabulary,
    prompt included (the loss then zeroes them): an embedded SFT step took 8.0-8.5 s against
    5.4-5.5 s scoring only the target (scripts in docs/training.md). Same log-probabilities."""
    from trl.kernels import chunked_logprob
    from trl.trainer import utils as trl_utils

    from progra_core.train.trainer import score_labelled_positions_only

    monkeypatch.setattr(trl_utils, "_use_triton", chunked_logprob._use_triton)  # TRL's own, whatever ran before
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    trl_utils.add_fused_lm_head(model)
    scored: list[int] = []
    real = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", lambda h, *a: (scored.append(h.shape[0]), real(h, *a))[1])
    ids = torch.randint(0, 200, (2, 40), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :30] = -100  # a 30-token prompt, a 10-token target: 10 scored positions per row after the shift
    every = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
    assert score_labelled_positions_only() and score_labelled_positions_only()  # idempotent
    only = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
    assert scored == [2 * 39, 2 * 10]
    assert torch.allclose(every, only, atol=1e-6)
