"""The peak-memory estimate: published parameter counts, monotone in batch and length, the
paper profile fitting one 141 GB GPU only with its micro-batches, refusals before loading, and
the vLLM refusal without vLLM or a GPU."""
import pytest
from typer.testing import CliRunner

from progra_core.config import GRPOConfig, SFTConfig, load_config
from progra_core.train import memory
from progra_core.train.memory import GIB, estimate_grpo, estimate_sft, load_arch


@pytest.mark.parametrize(("model", "published"), [("Salesforce/Llama-xLAM-2-8b-fc-r", 8.03e9),
                                                  ("Salesforce/xLAM-2-3b-fc-r", 3.09e9), ("Qwen/Qwen2.5-7B-Instruct", 7.62e9)])
def test_shipped_layouts_give_the_published_parameter_counts(model, published):
    assert load_arch(model).params == pytest.approx(published, rel=0.01)
    assert load_arch("hosted_vllm/" + model).params == load_arch(model).params  # a served name finds the same layout


def test_a_model_folder_is_read_and_the_lora_count_is_peft_s(embedded_model):
    a = load_arch(str(embedded_model))
    assert a.params == pytest.approx(134.5e6, rel=0.01)
    assert a.lora_params(16) == 4_884_480  # PEFT's trainable_params for r 16, all-linear (the embedded SFT's metrics)
    with pytest.raises(ValueError, match="no architecture"):
        load_arch("someone/unknown-model")


def test_estimate_grows_with_micro_batch_and_length_not_with_accumulation():
    a = load_arch("Salesforce/Llama-xLAM-2-8b-fc-r")
    totals = [estimate_sft(a, SFTConfig(batch_size=16, micro_batch_size=m, max_length=L)).total
              for m, L in [(1, 4096), (2, 4096), (2, 8192), (4, 8192)]]
    assert totals == sorted(totals) and len(set(totals)) == 4
    same = {estimate_sft(a, SFTConfig(batch_size=b, micro_batch_size=2, max_length=8192)).total for b in (2, 8, 16)}
    assert len(same) == 1  # more accumulated passes cost time, not memory
    off = estimate_sft(a, SFTConfig(micro_batch_size=2, batch_size=16, max_length=8192), checkpointing=False)
    assert off.parts["activations"] > 10 * estimate_sft(a, SFTConfig(micro_batch_size=2, batch_size=16, max_length=8192)).parts["activations"]
    g = lambda **k: estimate_grpo(a, GRPOConfig(**k), 141 * GIB)  # noqa: E731
    assert g(micro_batch_size=1).total < g(micro_batch_size=2).total < g(micro_batch_size=8).total
    assert g(use_vllm="colocate").parts["vllm"] == pytest.approx(0.3 * 141 * GIB) and "vllm" not in g(use_vllm="server").parts


def test_the_paper_profile_fits_141_gb_with_its_micro_batches_and_not_without():
    cfg = load_config("paper")
    assert cfg.sft.batch_size == 16 and cfg.sft.accumulation_steps * cfg.sft.micro_batch_size == 16
    assert cfg.grpo.streams_per_step == 64 and cfg.grpo.accumulation_steps * cfg.grpo.micro_batch_size == 64
    a = load_arch(cfg.models.policy)
    assert all(e.total < 141 * GIB for e in memory.plan(cfg, a, 141))
    whole = load_config("paper", overrides=["sft.micro_batch_size=null", "grpo.micro_batch_size=null"])
    over = {e.stage: e.total / GIB for e in memory.plan(whole, a, 141)}
    assert over["sft"] > 80 and over["grpo"] > 141  # 64 streams of 16k tokens in one pass: out of memory at step 1


def test_the_lm_head_is_trl_s_fused_tiles_not_the_full_logits():
    """Symptom: the plan charged tokens x vocabulary x 4 bytes twice (31.3 GiB for the paper's GRPO
    pass), which TRL 1.16 never allocates (its fused head works in 4096 x 32768 tiles), and refused
    colocate on an 80 GiB H100 (93.1 GiB) where it fits."""
    cfg = load_config("paper", overrides=["grpo.use_vllm=colocate"])
    a = load_arch(cfg.models.policy)
    grpo = next(e for e in memory.plan(cfg, a, 80) if e.stage == "grpo")
    full_logits = 2 * 4 * cfg.grpo.device_batch * cfg.grpo.max_seq_len * a.vocab
    assert grpo.parts["lm_head"] < full_logits / 10 and "logits" not in grpo.parts
    assert grpo.total < 80 * GIB  # colocate on one H100: planned to fit
    wider = memory.Arch(**{**a.__dict__, "vocab": 4 * a.vocab})  # a bigger vocabulary: more tiles, not a bigger one
    assert estimate_grpo(wider, cfg.grpo, 80 * GIB).parts["lm_head"] == grpo.parts["lm_head"]
    padded, single = (estimate_sft(a, SFTConfig(batch_size=2, max_length=16384), padded=p) for p in (True, False))
    assert padded.parts["attention_mask"] >= 2 * 16384 ** 2 and single.parts["attention_mask"] == 0


#: Measured with scripts/memory_calibration.py on this CPU (2 cores, bf16 autocast, TRL 1.16, the labelled-only
#: LM head), 2026-12-07: the peak RSS two SFT steps of the embedded model add, MiB, per (micro, length, padded).
EMBEDDED_MEASURED = {(1, 512, False): 1529.3, (1, 1024, False): 2141.8, (1, 2048, False): 3171.5, (2, 1024, False): 3386.0,
                     (2, 1024, True): 3810.1, (2, 2048, False): 6018.9, (2, 2048, True): 6949.8}


@pytest.mark.parametrize(("micro", "length", "padded"), list(EMBEDDED_MEASURED))
def test_the_estimate_against_the_measured_cpu_peaks(embedded_model, micro, length, padded):
    """The terms alone within 35 % below the measured peak additions (the process's fixed costs are
    the gap at short lengths); with the overhead term, never below it."""
    a = load_arch(str(embedded_model))
    est = estimate_sft(a, SFTConfig(batch_size=micro, max_length=length, lora_r=16, lora_alpha=32), checkpointing=False, weight_bytes=4,
                       padded=padded, completion_tokens=64)
    measured = EMBEDDED_MEASURED[(micro, length, padded)] * 2**20
    terms = est.total - est.parts["weights"] - est.parts["overhead"]
    assert -0.35 < terms / measured - 1 < 0.10
    assert est.total - est.parts["weights"] >= measured


def test_a_stage_that_cannot_fit_is_refused_before_loading(tiny_llama, monkeypatch):
    import torch

    from progra_core.train import trainer as sft

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU path, whatever the machine
    cfg = SFTConfig(batch_size=64, max_length=16384)
    with pytest.raises(memory.DoesNotFit, match=r"sft needs about .* GiB .* but the device has 0\.5 GiB: lower sft.micro"):
        sft.preflight(memory.estimate_sft, str(tiny_llama), cfg, "lower sft.micro_batch_size", gpu_bytes=GIB // 2)
    est = sft.preflight(memory.estimate_sft, str(tiny_llama), SFTConfig(batch_size=2, max_length=256), "x", gpu_bytes=80 * GIB)
    assert est is not None and est.total < 80 * GIB
    assert sft.preflight(memory.estimate_sft, str(tiny_llama), cfg, "x") is None  # CPU here: nothing to enforce


def test_vllm_rollouts_are_refused_without_a_gpu_or_vllm(monkeypatch):
    import importlib.util

    import torch

    from progra_core.train.grpo import check_vllm

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_vllm(GRPOConfig(use_vllm="off"))
    with pytest.raises(ValueError, match="colocate needs a CUDA GPU"):
        check_vllm(GRPOConfig(use_vllm="colocate"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ValueError, match=r"needs vLLM, which is not installed: pip install 'progra\[vllm\]'"):
        check_vllm(GRPOConfig(use_vllm="server", vllm_server="http://127.0.0.1:8000"))


def test_progra_plan_prints_every_stage_and_fails_when_one_does_not_fit():
    from flows.cli import app

    ok = CliRunner().invoke(app, ["plan", "--profile", "paper", "--gpu-memory", "141"])
    assert ok.exit_code == 0, ok.output
    assert "sft" in ok.output and "grpo" in ok.output and "evaluate" in ok.output and "NO" not in ok.output
    small = CliRunner().invoke(app, ["plan", "--profile", "paper", "--gpu-memory", "24"])
    assert small.exit_code == 1 and "NO" in small.output


def test_progra_plan_on_the_embedded_profile_before_the_model_was_ever_converted(tmp_path, embedded_model):
    """A fresh clone's ``progra plan`` (no converted model under the root yet) reads the embedded
    model's shipped layout, the same sizes as the converted folder. Before: "no architecture for
    'local/smollm2'", rc 2."""
    from flows.cli import app

    assert load_arch("local/smollm2", tmp_path / "empty-models").params == load_arch(str(embedded_model)).params
    out = CliRunner().invoke(app, ["plan", "--set", f"storage.root={tmp_path}", "--gpu-memory", "24"])
    assert out.exit_code == 0, out.output
    assert "local/smollm2" in out.output and "sft" in out.output


def test_local_evaluation_sizes_its_batch_for_the_device():
    from progra_core.llm.hf import cpu_bf16
    from progra_core.llm.local import CPU_BATCH_TOKENS, kv_batch_tokens, resolve_dtype

    assert resolve_dtype("auto", "cpu") == ("bfloat16" if cpu_bf16() else "float32")
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16" and resolve_dtype("float32", "cpu") == "float32"
    a = load_arch("Salesforce/Llama-xLAM-2-8b-fc-r")
    per = lambda gib: kv_batch_tokens(gib * GIB, a.layers, a.kv_dim, a.hidden, a.intermediate, 2)  # noqa: E731
    assert per(40) < per(80) < per(120)
    assert per(80) == pytest.approx(2 * per(40), rel=0.01)  # linear in the free memory
    # 8B in bf16: KV 2 x 32 layers x 1024 dims + activations 4 x 4096 + 2 x 14336, x 2 bytes = 216 KiB per token;
    # half of 40 GiB holds 97k tokens
    assert per(40) == 97_090
    paper = load_config("paper")
    assert paper.llm.local_batch_tokens == "auto" and paper.llm.local_dtype == "auto"
    on_141 = memory.eval_batch_tokens("auto", a, 141 * GIB, 16, 2048)
    assert on_141 > 16 * 9000  # 16 of BFCL's longest prompts in one pass
    est = memory.estimate_evaluate(a, on_141)
    assert est.total < 141 * GIB and est.parts["weights"] == a.params * 2
    assert memory.eval_batch_tokens(8192, a, 141 * GIB, 16, 2048) == 8192
    # CPU: as measured (auto). The embedded profile sets its own budget: with the docs a cached prefix, a BFCL
    # step of 20 entries costs only their suffixes and fits one pass
    assert CPU_BATCH_TOKENS == 8192 and load_config("embedded").llm.local_batch_tokens == 24576
