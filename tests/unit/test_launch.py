"""Training on more than one device: a train call as a 2-process ``accelerate launch`` job (gloo on
CPU) on the tiny llama. The effective batch is the configured one, the loss goes down, the
group advantages are normalised across ranks, and exactly one adapter is saved."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from progra_core.config import GRPOConfig, LaunchConfig, PipelineConfig, SFTConfig
from progra_core.methods import recipe
from progra_core.train import launch
from progra_core.train.sft import sft_rows
from tests.support import EXAMPLES
from tests.support import bfcl_episode as _episode

TWO = LaunchConfig(num_processes=2)


def test_the_effective_batch_is_split_over_processes_never_changed():
    cfg = SFTConfig(batch_size=8, micro_batch_size=2, launch=TWO)
    assert (cfg.device_batch, cfg.accumulation_steps) == (2, 2)  # 2 per pass x 2 processes x 2 passes = 8
    assert (SFTConfig(batch_size=8, launch=TWO).device_batch, SFTConfig(batch_size=8, launch=TWO).accumulation_steps) == (4, 1)
    g = GRPOConfig(batch_size=2, num_generations=4, micro_batch_size=2, launch=TWO)
    assert (g.device_batch, g.accumulation_steps) == (2, 2)
    with pytest.raises(ValidationError, match="effective batch would change"):
        SFTConfig(batch_size=6, micro_batch_size=2, launch=TWO)
    with pytest.raises(ValidationError, match="effective batch would change"):
        GRPOConfig(batch_size=1, num_generations=3, launch=TWO)


def test_one_process_keeps_the_fingerprint_more_processes_change_it():
    one = PipelineConfig()
    assert "launch" not in one.section("sft") and "launch" not in one.section("grpo")
    two = PipelineConfig(sft=SFTConfig(launch=TWO))
    assert two.section("sft")["launch"]["num_processes"] == 2


def test_commands_and_shipped_accelerate_configs():
    from accelerate.commands.config.config_args import load_config_from_file

    ddp = launch.command(TWO, "/job")
    assert ddp[ddp.index("--num_processes") + 1] == "2" and "--multi_gpu" in ddp and ddp[-3:] == ["-m", launch.__name__, "/job"]
    for strategy, kind in (("fsdp", "FSDP"), ("deepspeed", "DEEPSPEED")):
        cmd = launch.command(LaunchConfig(num_processes=4, strategy=strategy), "/job")
        path = cmd[cmd.index("--config_file") + 1]
        assert load_config_from_file(path).distributed_type == kind  # accelerate's own reader accepts the file


def test_sharded_strategies_and_missing_files_are_refused_before_launch(tmp_path):
    with pytest.raises(ValueError, match="none is visible"):
        launch.train("tests.unit.launch_targets:fail", LaunchConfig(num_processes=2, strategy="fsdp"), out_dir=tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        launch.train("tests.unit.launch_targets:fail", LaunchConfig(num_processes=2, config_file=str(tmp_path / "no.yaml")),
                     out_dir=tmp_path)


def test_a_failing_rank_fails_the_job_with_its_error(tmp_path):
    with pytest.raises(launch.LaunchFailed, match=r"exited [1-9]\d*; raised: [^\n]*RuntimeError: rank one broke"):
        launch.train("tests.unit.launch_targets:fail", TWO, out_dir=tmp_path, message="rank one broke")


def test_two_process_sft_keeps_the_batch_lowers_the_loss_and_saves_one_adapter(tiny_llama, tmp_path):
    cfg = SFTConfig(max_steps=6, batch_size=4, micro_batch_size=1, learning_rate=0.05, max_length=256,
                    lr_scheduler="constant", launch=TWO)
    rows = sft_rows(recipe("progra"), EXAMPLES * 4, [])
    steps, logs = [], []
    out = tmp_path / "adapter"
    m = launch.train("progra_core.train.sft:train_sft", cfg.launch, out_dir=out, progress=lambda s, n: steps.append((s, n)),
                     log=logs.append, rows=rows, base_path=str(tiny_llama), cfg=cfg, seed=0)
    assert (m["processes"], m["device_batch"], m["accumulation"], m["effective_batch"]) == (2, 1, 2, 4)
    assert steps == [(i, 6) for i in range(1, 7)]  # rank 0's progress, once per optimizer step
    train = [e for e in logs if "loss" in e]
    # each optimizer step consumed 4 of the 20 train rows over both ranks: the configured batch
    assert m["train_examples"] == 20 and [round(e["epoch"], 2) for e in train] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.2]
    assert m["eval_loss_after"] < m["eval_loss_before"]
    assert sorted(p.name for p in out.glob("adapter_*")) == ["adapter_config.json", "adapter_model.safetensors"]


def test_two_process_grpo_normalises_each_group_across_ranks(tiny_llama, tmp_path):
    """The group's two rollouts run on different ranks (rank 0 gold, rank 1 wrong): only rewards
    gathered over both ranks give the gold one a positive advantage and the wrong one a negative."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = GRPOConfig(batch_size=1, num_generations=2, max_actions=3, max_steps=2, learning_rate=0.05, max_seq_len=4096,
                     launch=TWO)
    out = tmp_path / "grpo"
    m, table = launch.train("tests.unit.launch_targets:scripted_grpo", cfg.launch, out_dir=out, episodes=[_episode()],
                            r=recipe("wo_pag"), cfg=cfg, base_path=str(tiny_llama), adapter_path=None, run="t",
                            docs_style="compact")
    assert (m["processes"], m["device_batch"], m["effective_batch"], m["steps"]) == (2, 1, 2, 2)
    rows = table.to_pylist()
    assert [(r["step"], r["generation"]) for r in rows] == [(1, 0), (1, 1), (2, 0), (2, 1)]  # both ranks' rollouts
    for step in (1, 2):
        gold, wrong = (r for r in rows if r["step"] == step)
        assert gold["total_reward"] > wrong["total_reward"] and gold["advantage"] > 0 > wrong["advantage"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(out))
    assert any(float(p.abs().max()) > 0 for n, p in model.named_parameters() if "lora_B" in n)  # the policy moved


def test_vllm_sampling_is_one_process_only():
    with pytest.raises(ValidationError, match="num_processes=1"):
        GRPOConfig(batch_size=1, num_generations=2, use_vllm="server", vllm_server="http://x", launch=TWO)


def test_release_memory_hands_freed_pages_back_to_the_os():
    """After a stage, memory it freed can stay resident (glibc keeps pages between live chunks):
    the embedded `make run` peaked at 22.1 GB against 14.9 GB before its stages became tasks of one
    flow. ``release_memory`` (gc + malloc_trim) gives those pages back."""
    import ctypes.util
    import os

    if not ctypes.util.find_library("c") or not os.path.exists("/proc/self/statm"):
        pytest.skip("needs glibc and /proc")
    from progra_core.train.launch import release_memory

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    chunks = [bytes(4000) for _ in range(60_000)]  # ~240 MB through malloc (larger than pymalloc's blocks)
    keep = chunks[::64]  # a live chunk every 256 KB: the heap cannot shrink from its top
    del chunks
    held = rss()
    release_memory()
    assert held - rss() > 150 * 2**20, (held, rss())
    assert len(keep) == 938
