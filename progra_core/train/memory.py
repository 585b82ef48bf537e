"""Peak GPU memory of a training or evaluation stage, estimated before it starts.

A paper-scale stage that does not fit fails after minutes of model loading, or hours in, on the
first long batch. The estimate adds up, for the worst case the config allows (every stream at
its longest):

* **weights**: parameters × 2 bytes in bf16 (CUDA), × 4 in fp32;
* **LoRA + optimizer**: the adapter in fp32 with its gradient and AdamW's two moments (16 bytes
  per trainable parameter);
* **activations** of one micro-batch, the tensors each layer keeps for the backward pass
  (:func:`_layer_bytes`: the RMSNorms' fp32 tensors, the autocast copy of each linear's input, the
  rotated q/k/v, the MLP, and PEFT's copy of each LoRA input); with gradient checkpointing every
  layer's input plus one layer's tensors; attention via SDPA, so no sequence² scores;
* **lm_head**: TRL 1.16's fused head (trl/kernels/chunked_logprob.py), never the full logits: the
  labelled positions' hidden states and fp32 gradient, and one 4,096 × 32,768 fp32 tile;
* **attention_mask**: a padded micro-batch (GRPO pads a group to its longest stream) gets a
  (B, 1, n, n) boolean mask and SDPA an additive copy; one unpadded stream needs none;
* **backward**: one layer's fp32 gradients in flight; on CPU under autocast, the bf16 copies of
  the weights autocast caches (**autocast_weights**);
* **vLLM** (GRPO with ``use_vllm: colocate``): its reserved share of the device
  (``grpo.vllm_gpu_memory_utilization``, TRL's default 0.3); in server mode it runs elsewhere;
* a fixed **overhead** for the CUDA context, allocator fragmentation and buffers (10 %, at least 2 GB).

The architecture comes from a model folder's ``config.json`` or, for the paper's policies (hub
ids, never downloaded), from the layouts shipped in ``progra_core/train/architectures/``. Pure
arithmetic: tested for the published parameter counts, for monotonicity in batch and length, and
against peaks measured on CPU (``scripts/memory_calibration.py``; docs/training.md has the table)."""

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
    if name in ("smollm2", "smollm2-135m-instruct"):  # the embedded default, before its first conversion
        candidates.append(_SHIPPED / "HuggingFaceTB__SmolLM2-135M-Instruct.json")
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


#: TRL 1.16's fused LM head projects in tiles of this many tokens x vocabulary entries
#: (trl/kernels/chunked_logprob.py): the (tokens x vocabulary) logits never exist in full.
HEAD_TOKENS, HEAD_VOCAB = 4096, 32768


def _residual_bytes(ab: int, wb: int) -> int:
    """The residual stream is in the weights' dtype: fp32 on CPU under autocast, else the compute dtype."""
    return 4 if wb == 4 else ab


def _layer_bytes(a: Arch, ab: int, wb: int) -> float:
    """Bytes one decoder layer keeps per token for the backward pass (no checkpointing): the two
    RMSNorms' fp32 input and output, the autocast input copy of each of the seven linears, the
    rotated q/k/v and the attention output, the MLP's gate/up/activation, the residual, and PEFT's
    copy of each LoRA input (fp32 over a bf16 base on CUDA; the autocast bf16 copy on CPU)."""
    h, kv, i = a.hidden, a.kv_dim, a.intermediate
    norms = 2 * 2 * 4 * h
    linear_inputs = ab * (6 * h + i)
    attention = ab * (2 * h + 2 * kv)
    mlp = ab * 3 * i
    peft = (4 if wb == 2 else ab) * (6 * h + i)
    return norms + linear_inputs + attention + mlp + peft + _residual_bytes(ab, wb) * 2 * h


def _activations(a: Arch, tokens: int, checkpointing: bool, ab: int, wb: int) -> float:
    layer = _layer_bytes(a, ab, wb)
    if checkpointing:  # every layer's input kept, one layer's tensors rebuilt at a time
        return tokens * (a.layers * _residual_bytes(ab, wb) * a.hidden + layer)
    return tokens * a.layers * layer


def _lm_head(a: Arch, labeled: int, ab: int) -> float:
    """TRL's fused head on the ``labeled`` positions only: their hidden states (saved), the fp32
    gradient it accumulates for them, and one fp32 tile of logits."""
    return labeled * a.hidden * (ab + 4) + min(labeled, HEAD_TOKENS) * min(a.vocab, HEAD_VOCAB) * 4


def _mask(micro: int, length: int, ab: int, padded: bool) -> float:
    """A padded batch gets a (B, 1, n, n) boolean mask and SDPA an additive copy in the compute
    dtype; one unpadded stream runs causal without a mask."""
    return micro * length * length * (1 + ab) if padded and micro > 1 else 0


def _train(stage: str, a: Arch, micro: int, length: int, r: int, bf16: bool, checkpointing: bool, extra: dict,
           weight_bytes: int | None = None, padded: bool = True, labeled: int | None = None) -> Estimate:
    ab = 2 if bf16 else 4
    wb = weight_bytes or ab  # CUDA loads bf16 weights when bf16 is on; the CPU keeps fp32 under autocast
    tokens = micro * length
    labeled = tokens if labeled is None else min(labeled * micro, tokens)
    parts = {"weights": a.params * wb, "lora_optimizer": 16 * a.lora_params(r),
             "activations": _activations(a, tokens, checkpointing, ab, wb), "lm_head": _lm_head(a, labeled, ab),
             "attention_mask": _mask(micro, length, ab, padded),
             "backward": tokens * 4 * (2 * a.hidden + 2 * a.intermediate),  # one layer's fp32 gradients in flight
             **({"autocast_weights": a.params * 2} if wb == 4 and bf16 else {}),  # CPU autocast caches bf16 copies
             **extra}
    parts["overhead"] = _overhead(parts)
    return Estimate(stage, parts, f"{micro} x {length} tokens per pass, checkpointing {'on' if checkpointing else 'off'}")


def estimate_sft(a: Arch, cfg, bf16: bool = True, checkpointing: bool = True, weight_bytes: int | None = None,
                 padded: bool = True, completion_tokens: int | None = None) -> Estimate:
    """``cfg``: an ``SFTConfig``; one micro-batch of ``max_length``-token examples, padded to the
    longest (the worst case) unless ``padded`` is False; ``completion_tokens`` per example carry
    the loss (all of them when None)."""
    return _train("sft", a, cfg.device_batch, cfg.max_length, cfg.lora_r, bf16, checkpointing, {},
                  weight_bytes, padded, completion_tokens)


def estimate_grpo(a: Arch, cfg, gpu_bytes: float, bf16: bool = True, checkpointing: bool = True) -> Estimate:
    """``cfg``: a ``GRPOConfig``; one micro-batch of streams padded to ``max_seq_len`` (the longest
    stream of a group can reach it: episodes stop before it, never after), every token scored
    (the worst case), the KL reference as a frozen adapter copy, and vLLM's share of the device
    when colocated."""
    rank = cfg.lora_shape()[0]  # build_trainer sets the SFT adapter's rank when it is inherited
    extra = {"reference_adapter": 4 * a.lora_params(rank)}
    if cfg.use_vllm == "colocate":
        extra["vllm"] = cfg.vllm_gpu_memory_utilization * gpu_bytes
    return _train("grpo", a, cfg.device_batch, cfg.max_seq_len, rank, bf16, checkpointing, extra)


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
