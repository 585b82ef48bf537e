"""Peak GPU memory of a training or evaluation stage, estimated before it starts.

A paper-scale stage that does not fit fails after minutes of model loading, or hours in, on the
first long batch. The estimate adds up, for the worst case the config allows (every stream at
its longest):

* **weights**: parameters × 2 bytes in bf16 (CUDA), × 4 in fp32;
* **LoRA + optimizer**: the adapter in fp32 with its gradient and AdamW's two moments (16 bytes
  per trainable parameter);
* **activations** of one micro-batch: with gradient checkpointing, every layer's input plus one
  layer's saved tensors (recomputed in the backward pass); without it, every layer's saved
  tensors (attention via SDPA/flash, so no sequence² term);
* **logits**: the micro-batch's tokens × vocabulary in fp32, twice (the logits and their
  log-softmax / gradient), which at a 128k vocabulary is often the largest term;
* **vLLM** (GRPO with ``use_vllm: colocate``): its reserved share of the device
  (``grpo.vllm_gpu_memory_utilization``, TRL's default 0.3); in server mode it runs elsewhere;
* a fixed **overhead** for the CUDA context, allocator fragmentation and buffers (10 %, at least 2 GB).

The architecture comes from a model folder's ``config.json`` or, for the paper's policies (hub
ids, never downloaded), from the layouts shipped in ``progra_core/train/architectures/``. Pure
arithmetic: tested for the published parameter counts and for monotonicity in batch and length."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from progra_core.llm.local import kv_batch_tokens

__all__ = ["Arch", "Estimate", "load_arch", "estimate_sft", "estimate_grpo", "estimate_evaluate", "plan", "check_fits",
           "DoesNotFit", "GIB", "eval_batch_tokens"]

GIB = 1024 ** 3
_SHIPPED = Path(__file__).resolve().parent / "architectures"


class DoesNotFit(ValueError):
    """A stage's estimated peak memory exceeds the device's."""


@dataclass(frozen=True)
class Arch:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool = False
    name: str = ""

    @property
    def kv_dim(self) -> int:
        return self.hidden * self.kv_heads // self.heads

    def linears(self) -> list[tuple[int, int]]:
        """(in, out) of one layer's linear modules: q, k, v, o, gate, up, down (PEFT's all-linear)."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]

    @property
    def params(self) -> int:
        per_layer = sum(a * b for a, b in self.linears()) + 2 * self.hidden
        return self.layers * per_layer + self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    def lora_params(self, r: int) -> int:
        return self.layers * sum(r * (a + b) for a, b in self.linears())


def load_arch(model: str, models_root: str | Path | None = None) -> Arch:
    """``model``: a folder with ``config.json``, a ``local/<name>`` under ``models_root``, or a hub
    id with a shipped layout (``org/name`` → ``architectures/org__name.json``)."""
    name = model.removeprefix("local/")
    candidates = [Path(name) / "config.json"]
    if models_root is not None:
        candidates.append(Path(models_root) / name / "config.json")
        candidates.append(Path(models_root) / ("smollm2-135m-instruct" if name == "smollm2" else name) / "config.json")
    for prefix in ("hosted_vllm/", "openai/", ""):
        if model.startswith(prefix):
            candidates.append(_SHIPPED / (model.removeprefix(prefix).replace("/", "__") + ".json"))
    for path in candidates:
        if path.is_file():
            c = json.loads(path.read_text())
            return Arch(hidden=c["hidden_size"], intermediate=c["intermediate_size"], layers=c["num_hidden_layers"],
                        heads=c["num_attention_heads"], kv_heads=c.get("num_key_value_heads") or c["num_attention_heads"],
                        vocab=c["vocab_size"], tied=bool(c.get("tie_word_embeddings", False)), name=model)
    shipped = sorted(p.stem.replace("__", "/") for p in _SHIPPED.glob("*.json"))
    raise ValueError(f"no architecture for {model!r}: give a model folder with config.json, or one of {shipped}")


@dataclass
class Estimate:
    stage: str
    parts: dict[str, float] = field(default_factory=dict)  # bytes
    notes: str = ""

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def gib(self) -> dict[str, float]:
        return {k: round(v / GIB, 1) for k, v in {**self.parts, "total": self.total}.items()}


def _overhead(parts: dict[str, float]) -> float:
    return max(2 * GIB, 0.10 * sum(parts.values()))


def _activations(a: Arch, tokens: int, checkpointing: bool, act_bytes: int) -> float:
    saved_per_token = 8 * a.hidden + 2 * a.kv_dim + 4 * a.intermediate  # one layer's tensors kept for backward
    if checkpointing:
        return act_bytes * tokens * (a.layers * a.hidden + saved_per_token)
    return act_bytes * tokens * a.layers * saved_per_token


def _train(stage: str, a: Arch, micro: int, length: int, r: int, bf16: bool, checkpointing: bool, extra: dict) -> Estimate:
    tokens = micro * length
    parts = {"weights": a.params * (2 if bf16 else 4), "lora_optimizer": 16 * a.lora_params(r),
             "activations": _activations(a, tokens, checkpointing, 2 if bf16 else 4), "logits": 2 * 4 * tokens * a.vocab,
             **extra}
    parts["overhead"] = _overhead(parts)
    return Estimate(stage, parts, f"{micro} x {length} tokens per pass, checkpointing {'on' if checkpointing else 'off'}")


def estimate_sft(a: Arch, cfg, bf16: bool = True, checkpointing: bool = True) -> Estimate:
    """``cfg``: an ``SFTConfig``; one micro-batch of ``max_length``-token examples."""
    return _train("sft", a, cfg.device_batch, cfg.max_length, cfg.lora_r, bf16, checkpointing, {})


def estimate_grpo(a: Arch, cfg, gpu_bytes: float, bf16: bool = True, checkpointing: bool = True) -> Estimate:
    """``cfg``: a ``GRPOConfig``; one micro-batch of ``max_seq_len``-token streams, the KL
    reference as a frozen adapter copy, and vLLM's share of the device when colocated."""
    rank = cfg.lora_shape()[0]  # build_trainer sets the SFT adapter's rank when it is inherited
    extra = {"reference_adapter": 4 * a.lora_params(rank)}
    if cfg.use_vllm == "colocate":
        extra["vllm"] = cfg.vllm_gpu_memory_utilization * gpu_bytes
    return _train("grpo", a, cfg.device_batch, cfg.max_seq_len, rank, bf16,
                  checkpointing, extra)


def estimate_evaluate(a: Arch, batch_tokens: int, bf16: bool = True) -> Estimate:
    """Local evaluation: weights, the KV cache of a ``batch_tokens`` batch, its last-position logits."""
    b = 2 if bf16 else 4
    parts = {"weights": a.params * b, "kv_cache": 2 * a.layers * a.kv_dim * batch_tokens * b,
             "activations": b * batch_tokens * (4 * a.hidden + 2 * a.intermediate)}
    parts["overhead"] = _overhead(parts)
    return Estimate("evaluate", parts, f"a {batch_tokens}-token batch")


def plan(cfg, a: Arch, gpu_gib: float) -> list[Estimate]:
    """Every GPU stage of ``cfg`` (a ``PipelineConfig``) on a ``gpu_gib`` GiB device (bf16 and
    gradient checkpointing as they resolve on CUDA)."""
    from progra_core.methods import RECIPES

    ckpt = lambda mode: mode != "off"  # noqa: E731  (auto = on, on CUDA)
    bf16 = lambda p: p != "fp32"  # noqa: E731
    r = RECIPES.get(cfg.method)
    grpo = cfg.grpo
    if r is not None and r.continues_sft:  # PAG-RL trains the SFT adapter: its rank
        grpo = grpo.model_copy(update={"lora_r": grpo.lora_shape((cfg.sft.lora_r, cfg.sft.lora_alpha))[0]})
    return [estimate_sft(a, cfg.sft, bf16(cfg.sft.precision), ckpt(cfg.sft.gradient_checkpointing)),
            estimate_grpo(a, grpo, gpu_gib * GIB, bf16(cfg.grpo.precision), ckpt(cfg.grpo.gradient_checkpointing)),
            estimate_evaluate(a, eval_batch_tokens(cfg.llm.local_batch_tokens, a, gpu_gib * GIB, cfg.llm.local_batch_size,
                                                   cfg.evaluate.max_tokens))]


def eval_batch_tokens(setting, a: Arch, gpu_bytes: float, batch_size: int, max_tokens: int, bf16: bool = True) -> int:
    """The batch budget local evaluation will use on this device: ``llm.local_batch_tokens`` as
    set, or for ``auto`` what :func:`progra_core.llm.local.kv_batch_tokens` sizes from the memory
    left after the weights (as the backend does once loaded)."""
    if setting == "auto":
        b = 2 if bf16 else 4
        return kv_batch_tokens(gpu_bytes - a.params * b, a.layers, a.kv_dim, a.hidden, a.intermediate, b)
    return setting or batch_size * max_tokens


def check_fits(est: Estimate, gpu_bytes: float, hint: str) -> None:
    """Refuse a stage that cannot fit, before it loads anything."""
    if est.total > gpu_bytes:
        parts = ", ".join(f"{k} {v} GiB" for k, v in est.gib().items() if k != "total")
        raise DoesNotFit(f"{est.stage} needs about {est.total / GIB:.1f} GiB ({parts}; {est.notes}) but the device has "
                         f"{gpu_bytes / GIB:.1f} GiB: {hint}")
