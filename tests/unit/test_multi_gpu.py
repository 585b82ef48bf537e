"""What the multi-GPU paths do that can be shown on one CPU: the adapter saved under an FSDP plugin
that trains with a sharded state dict, and the KL-reference check on sharded (DTensor) weights."""

import inspect
import types

import pytest
import torch
import torch.distributed as dist


def test_an_fsdp_run_that_trains_sharded_still_saves_its_adapter(tmp_path):
    """Symptom: configs/accelerate/fsdp.yaml trains with SHARDED_STATE_DICT, for which
    ``Trainer.save_model`` writes nothing, so no adapter was saved. The fake trainer below saves
    exactly when transformers' own condition holds (checked against its source)."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from transformers import Trainer

    from progra_core.train.trainer import save_adapter

    assert '"FULL_STATE_DICT" in str(self.accelerator.state.fsdp_plugin.state_dict_type)' in inspect.getsource(Trainer.save_model)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, state_dict_type="SHARDED_STATE_DICT")
    acc = types.SimpleNamespace(distributed_type=types.SimpleNamespace(name="FSDP"), state=types.SimpleNamespace(fsdp_plugin=plugin),
                                is_main_process=True, wait_for_everyone=lambda: None)

    class FakeTrainer:
        accelerator = acc

        def save_model(self, out):
            if "FULL_STATE_DICT" in str(self.accelerator.state.fsdp_plugin.state_dict_type):  # transformers 5.x
                (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")

    tok = types.SimpleNamespace(save_pretrained=lambda out: None)
    (tmp_path / "adapter").mkdir()
    save_adapter(FakeTrainer(), tok, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    assert "SHARDED_STATE_DICT" in str(plugin.state_dict_type)  # training checkpoints stay sharded


@pytest.fixture
def one_rank_mesh(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdzv'}", rank=0, world_size=1)
    try:
        from torch.distributed.device_mesh import init_device_mesh

        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def test_the_reference_check_compares_whole_weights_when_they_are_sharded(one_rank_mesh):
    """Symptom: ``_check_reference`` compared FSDP2's DTensor shards after training with the full
    tensors taken before it (mixed Tensor/DTensor: an error). The weights are gathered first."""
    from torch.distributed.tensor import Shard, distribute_tensor

    from progra_core.train.grpo import _adapter_weights, _check_reference

    torch.manual_seed(0)
    full = {"m.lora_A.default.weight": torch.randn(4, 8), "m.lora_A.ref.weight": torch.randn(4, 8)}
    full["m.lora_A.ref.weight"] = full["m.lora_A.default.weight"].clone()

    class Model(torch.nn.Module):
        peft_config = {"default": None, "ref": None}

        def __init__(self, tensors):
            super().__init__()
            self.tensors = tensors

        def named_parameters(self, *a, **k):
            return iter(self.tensors.items())

    init = _adapter_weights(Model(full), "default")  # taken before training, unsharded
    trained = {k: distribute_tensor(v + (0.5 if ".default." in k else 0.0), one_rank_mesh, [Shard(0)]) for k, v in full.items()}
    out = _check_reference(Model(trained), init)
    assert out["kl_reference"] == "sft_adapter_copy" and out["ref_equals_sft_adapter"] is True
    assert out["policy_max_weight_change"] == pytest.approx(0.5)


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed"])
def test_pag_rl_on_sharded_weights_is_refused_before_it_can_hang(strategy):
    """Symptom: with FSDP2 (or ZeRO-3) every forward of the transformers sampler is a collective,
    and ranks play their episodes for different numbers of rounds: a likely hang. Refused at load."""
    from pydantic import ValidationError

    from progra_core.config import GRPOConfig, LaunchConfig, load_config

    with pytest.raises(ValidationError, match=f"strategy={strategy} with 2 processes.*one rank would wait forever"):
        GRPOConfig(batch_size=2, num_generations=2, launch=LaunchConfig(num_processes=2, strategy=strategy))
    assert GRPOConfig(batch_size=2, num_generations=2, launch=LaunchConfig(num_processes=2)).launch.strategy == "ddp"
    assert GRPOConfig(launch=LaunchConfig(num_processes=1, strategy=strategy)).launch.strategy == strategy
    load_config("paper")  # the shipped profiles stay valid


def test_under_zero3_the_continued_adapter_takes_the_base_dtype(tiny_llama, tmp_path, monkeypatch):
    """Symptom: PEFT loads the SFT adapter in fp32 over a bf16 base; ZeRO-3 flattens parameters of
    one dtype (TRL casts only on its own peft_config path). Outside ZeRO-3 the adapter stays fp32."""
    import transformers.integrations as integrations
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from progra_core.train.grpo import load_policy

    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), LoraConfig(r=4, target_modules="all-linear")).save_pretrained(
        tmp_path / "adapter")
    lora = lambda m: {p.dtype for n, p in m.named_parameters() if "lora_" in n}  # noqa: E731
    assert lora(load_policy(str(tiny_llama), str(tmp_path / "adapter"), torch.bfloat16)) == {torch.float32}
    monkeypatch.setattr(integrations, "is_deepspeed_zero3_enabled", lambda: True)
    model = load_policy(str(tiny_llama), str(tmp_path / "adapter"), torch.bfloat16)
    assert lora(model) == {torch.bfloat16} and all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)


def test_models_load_after_the_training_config(tiny_llama, tmp_path, monkeypatch):
    """Symptom: SFT and PAG-RL loaded the model before TRL's config existed, so a ZeRO-3 launch
    (whose config is what makes ``from_pretrained`` partition the weights) built the whole model on
    every rank. The order is recorded here for both stages."""
    import transformers
    import trl

    from progra_core.config import SFTConfig
    from progra_core.methods import recipe
    from progra_core.train.sft import sft_rows, train_sft
    from tests.support import EXAMPLES

    order: list[str] = []
    for cls in (trl.SFTConfig, trl.GRPOConfig):
        real_init = cls.__post_init__
        monkeypatch.setattr(cls, "__post_init__", lambda self, _r=real_init, _n=cls.__name__: (order.append(_n), _r(self))[1])
    real_load = transformers.AutoModelForCausalLM.from_pretrained.__func__
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        classmethod(lambda cls, *a, **k: (order.append("model"), real_load(cls, *a, **k))[1]))
    train_sft(sft_rows(recipe("progra"), EXAMPLES, []), str(tiny_llama), SFTConfig(max_steps=1, batch_size=2, max_length=256),
              tmp_path / "sft")
    assert order[:2] == ["SFTConfig", "model"]
    from progra_core.config import GRPOConfig
    from progra_core.train.grpo import build_trainer
    from tests.support import bfcl_episode as _episode

    order.clear()
    build_trainer([_episode()], recipe("progra"), GRPOConfig(batch_size=1, num_generations=2, max_steps=1), str(tiny_llama),
                  str(tmp_path / "sft"), tmp_path / "grpo")
    assert order[:2] == ["GRPOConfig", "model"]
