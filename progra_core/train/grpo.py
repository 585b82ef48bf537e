"""Stage ``grpo`` (§3.3): PAG-RL with TRL's ``GRPOTrainer`` and a ``rollout_func`` that plays whole
episodes in BFCL environments (:mod:`progra_core.train.rollout`).

* The rollout returns one stream per episode with ``env_mask`` (observations excluded from loss
  and KL) and the episode's discounted return per reward term of the recipe's rubric
  (:mod:`progra_core.train.rewards`); one TRL reward function per term hands them to TRL, which
  sums them into R(τ) and logs each one (``rewards/reward_<term>/mean``).
* TRL normalises R(τ) within each group of ``num_generations`` rollouts and puts that advantage on
  every model token of the episode (Eq. 15); Dr. GRPO recipes use ``loss_type="dr_grpo"`` without
  std scaling.
* Started from a loaded SFT adapter (``PeftModel.from_pretrained(..., is_trainable=True)``, no
  ``peft_config``), TRL copies it into a frozen ``ref`` adapter, so the KL term (β) is to the SFT
  policy π_θ' without a second model in memory; started from the base model, the reference is the
  base (adapter disabled).
* Every rollout becomes a ``rollouts`` row (actions, reward terms, advantage, tokens).

datasets, PEFT, torch, transformers, TRL are imported inside the functions that use them: heavy, and only some callers need them."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pyarrow as pa

from progra_core import versioning
from progra_core.config import GRPOConfig
from progra_core.llm.hf import quiet_hf
from progra_core.methods import Recipe
from progra_core.prompts.tools import DocStyle
from progra_core.schemas import ROLLOUT_ACTION, ROLLOUTS
from progra_core.train import (
    judge,  # noqa: F401 - registers TARL's judge term
    memory,
    rollout,
    samplers,
)
from progra_core.train.checkpoints import Checkpointing, checkpoint_callback, read_marker
from progra_core.train.rewards import MODEL_TERMS, Rubric
from progra_core.train.tracking import Tracking, tracking_setup
from progra_core.train.trainer import (
    device_kwargs,
    lora_config,
    preflight,
    quiet_trainer,
    save_adapter,
    score_labelled_positions_only,
    step_callbacks,
    weights_dtype,
    world,
)

__all__ = ["STAGE", "CODE_VERSION", "ROLLOUTS", "ROLLOUT_ACTION", "MODEL_TERMS", "select_episodes", "build_trainer", "train_grpo",
           "reward_functions", "Recorder", "rubric_for", "load_policy"]

STAGE = "grpo"
CODE_VERSION = versioning.code_version("1", __name__)



def select_episodes(episodes: list[rollout.Episode], cfg: GRPOConfig) -> list[rollout.Episode]:
    """``episodes`` limit: the first by id, or those with the shortest prompts (cheap CPU runs)."""
    eps = sorted(episodes, key=lambda e: e.episode_id)
    if cfg.select == "shortest":
        # what the prompt holds: tool docs, the scenario (τ²: the whole domain policy) and the queries
        eps.sort(key=lambda e: (len(e.tools) + len(e.scenario) + sum(len(t["query"]) for t in e.turns[: cfg.max_turns or None]),
                                e.episode_id))
    return eps[: cfg.episodes] if cfg.episodes else eps


def _term_reward(term: str):
    def reward(prompts, completions, **kwargs) -> list[float]:
        return [float(v) for v in kwargs[f"r_{term}"]]

    reward.__name__ = f"reward_{term}"
    return reward


def reward_functions(rubric: Rubric) -> list:
    """One TRL reward function per rubric term (it hands TRL the episode's discounted, weighted
    term); TRL's sum of them is R(τ)."""
    return [_term_reward(t) for t in rubric.names]


def rubric_for(r: Recipe, cfg: GRPOConfig, extra: dict | None = None) -> Rubric:
    """The recipe's reward terms with the config's weights."""
    return Rubric.from_config(cfg, r.reward_terms, extra)


class Recorder:
    """Collects each step's rollouts and, once TRL has computed them, their advantages."""

    def __init__(self, run: str, method: str, mode: str, num_generations: int):
        self.run, self.method, self.mode, self.k = run, method, mode, num_generations
        self.pending: list[tuple[int, str, rollout.Rollout]] = []
        self.rows: list[dict] = []
        self.step_seconds: list[float] = []

    def add(self, step: int, prompts: Sequence[str], results: Sequence[rollout.Rollout]) -> None:
        self.pending = [(step, p, r) for p, r in zip(prompts, results, strict=True)]

    def attach(self, advantages: Sequence[float]) -> None:
        for i, ((step, prompt, r), adv) in enumerate(zip(self.pending, advantages, strict=True)):
            self.rows.append({
                "run": self.run, "method": self.method, "mode": self.mode, "step": step, "prompt_id": prompt,
                "generation": i % self.k, "actions": r.actions,
                "rewards": {t: v for t, v in r.returns.items() if t != "total"},
                "total_reward": r.returns["total"], "advantage": float(adv), "n_actions": len(r.actions),
                "tokens": r.model_tokens, "env_tokens": len(r.env_mask) - r.model_tokens, "turns_passed": r.turns_passed,
                "n_turns": len(r.turns_passed), "stop_reason": r.stop_reason,
            })
        self.pending = []

    def table(self, accelerator=None) -> pa.Table:
        """Every rollout of the run; with several processes, every rank's (gathered, in rank order),
        each group's generations numbered across ranks (TRL spreads a group over processes)."""
        rows = self.rows
        if accelerator is not None and accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            rows = gather_object([rows])
            rows = sorted((r for part in rows for r in part), key=lambda r: r["step"])  # stable: rank order within a step
            seen: dict[tuple[int, str], int] = {}
            for r in rows:
                key = (r["step"], r["prompt_id"])
                r["generation"] = seen.get(key, 0)
                seen[key] = r["generation"] + 1
        return pa.Table.from_pylist(rows, schema=ROLLOUTS)

    def last_rows(self) -> list[dict]:
        """The rollouts of the latest step (recorded once TRL has their advantages)."""
        last = max((r["step"] for r in self.rows), default=None)
        return [r for r in self.rows if r["step"] == last]


def _block_mask(blocks, valid):
    """[B, 1, n, n] boolean attention: a token sees earlier tokens of its own block and the shared
    info_meta (block 0); padding sees only itself (rows of padding stay finite)."""
    import torch

    n = blocks.size(1)
    causal = torch.ones(n, n, dtype=torch.bool, device=blocks.device).tril()
    same = (blocks[:, :, None] == blocks[:, None, :]) | (blocks[:, None, :] == 0)
    allowed = causal & same & valid.bool()[:, None, :] & valid.bool()[:, :, None]
    allowed |= torch.eye(n, dtype=torch.bool, device=blocks.device)
    return allowed[:, None]


def _padded_layout(results: Sequence[rollout.Rollout], multiple: int | None, device):
    """Positions and blocks in the trainer's layout: prompts left-padded, completions right-padded
    (TRL's), -1 for padding."""
    import torch

    P = max(len(x.prompt_ids) for x in results)
    C = max(len(x.completion_ids) for x in results)
    if multiple:
        P, C = -(-P // multiple) * multiple, -(-C // multiple) * multiple
    pos = torch.zeros(len(results), P + C, dtype=torch.long)
    blk = torch.full((len(results), P + C), -1, dtype=torch.long)
    for i, x in enumerate(results):
        p, c = len(x.prompt_ids), len(x.completion_ids)
        pos[i, P - p:P + c] = torch.tensor(x.positions[:p + c])
        blk[i, P - p:P + c] = torch.tensor(x.blocks[:p + c])
    return pos.to(device), blk.to(device)


def _trainer_class():
    from trl import GRPOTrainer

    class PAGRLTrainer(GRPOTrainer):
        """GRPOTrainer that (1) scores every token under the context it was sampled from: the
        rollout's positions and blocks travel with the batch, and in awareness mode a block
        attention mask gives each turn exactly its sampling context; (2) fixes Dr. GRPO's constant
        normaliser at the first step; (3) hands each batch's advantages to the recorder."""

        recorder: Recorder | None = None
        dr_grpo_tokens: int | None = None  #: fixed once (config or first step), then constant
        _layout = None  # (positions, blocks) of the batch being scored

        @contextmanager
        def scored_as_sampled(self, inputs):
            """Forward passes inside use the batch's own layout (``block_positions``/``block_ids``)."""
            before = self._layout
            self._layout = (inputs["block_positions"], inputs["block_ids"]) if "block_positions" in inputs else None
            try:
                yield
            finally:
                self._layout = before

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)  # rollout_func set _layout for its forwards
            if self._layout is not None:
                out["block_positions"], out["block_ids"] = self._layout
            self._layout = None
            if self.loss_type == "dr_grpo":
                if self.dr_grpo_tokens is None:
                    mask = out["completion_mask"] * out["tool_mask"] if out.get("tool_mask") is not None else out["completion_mask"]
                    per_stream = self.accelerator.gather(mask.sum(1).float())  # the same constant on every rank
                    self.dr_grpo_tokens = max(1, round(float(per_stream.mean())))
                self.max_completion_length = self.dr_grpo_tokens  # TRL's dr_grpo divides by this
            if self.recorder is not None and self.recorder.pending:
                self.recorder.attach(out["advantages"].detach().float().cpu().tolist())
            return out

        def _compute_loss(self, model, inputs):
            with self.scored_as_sampled(inputs):
                return super()._compute_loss(model, inputs)

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                               compute_entropy=False, compute_aux_loss=False, **multimodal):
            if self._layout is None or any(v is not None for v in multimodal.values()):
                return super()._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss, **multimodal)
            import torch

            positions, blocks = self._layout
            batch_size = batch_size or input_ids.size(0)
            blockwise = bool((blocks > 0).any())  # awareness mode: turns are separate contexts
            logps, entropies, aux = [], [], []
            for s in range(0, input_ids.size(0), batch_size):
                ids, mask = input_ids[s:s + batch_size], attention_mask[s:s + batch_size]
                attn = _block_mask(blocks[s:s + batch_size], mask) if blockwise else mask
                labels = ids.masked_fill(mask == 0, -100)
                labels[:, :-logits_to_keep] = -100
                kw = {"output_router_logits": True} if compute_aux_loss else {}
                with self.accelerator.autocast():
                    outputs = model(input_ids=ids, attention_mask=attn, position_ids=positions[s:s + batch_size],
                                    labels=labels, fused_lm_head=True, **kw)
                logps.append(outputs.log_probs[:, -logits_to_keep:])
                if compute_entropy:
                    entropies.append(outputs.entropy[:, -logits_to_keep:])
                if compute_aux_loss:
                    aux.append(outputs.aux_loss)
            return (torch.cat(logps, 0), torch.cat(entropies, 0) if compute_entropy else None,
                    torch.stack(aux).mean() if compute_aux_loss else None)

    return PAGRLTrainer


def _rollout_func(episodes: dict[str, rollout.Episode], r: Recipe, cfg: GRPOConfig, tok, recorder: Recorder, rubric: Rubric,
                  docs_style: DocStyle):
    from trl.models import unwrap_model_for_generation

    def rollout_func(prompts: list[str], trainer) -> dict:
        import torch

        play = lambda generate: rollout.run_episodes(  # noqa: E731
            [episodes[p] for p in prompts], generate, tok, r.grpo, rubric, cfg.max_actions, cfg.max_seq_len,
            awareness_prompt=r.awareness_prompt or r.grpo == "awareness", max_turn_actions=cfg.max_turn_actions,
            docs_style=docs_style, max_action_tokens=cfg.max_action_tokens)
        if trainer.use_vllm:  # TRL synced the current weights into its engine before calling us
            results = play(rollout.vllm_sampler(trainer.vllm_generation, cfg.max_action_tokens, trainer.eos_token_ids,
                                                 tok.decode))
        else:  # sampled under the trainer's own precision, so the sampling log-probs are the ones it recomputes
            with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model, torch.no_grad(), \
                    trainer.accelerator.autocast():
                results = play(rollout.hf_sampler(model, tok, cfg.max_action_tokens, cfg.temperature, cfg.sample_batch_size,
                                                  seed=cfg.seed + trainer.state.global_step + 1_000_003 * trainer.accelerator.process_index,
                                                  prefix_cache_mb=cfg.sample_prefix_cache_mb))
        recorder.add(trainer.state.global_step + 1, prompts, results)
        trainer._layout = _padded_layout(results, trainer.pad_to_multiple_of, trainer.accelerator.device)
        logprobs = [x.logprobs for x in results] if all(x.logprobs is not None for x in results) else None
        out = {"prompt_ids": [x.prompt_ids for x in results], "completion_ids": [x.completion_ids for x in results],
               "logprobs": logprobs, "env_mask": [x.env_mask for x in results]}
        out |= {f"r_{t}": [x.returns[t] for x in results] for t in rubric.names}
        return out

    return rollout_func


def adapter_shape(adapter_path: str | Path) -> tuple[int, int]:
    """(rank, alpha) of a saved PEFT LoRA adapter, from its ``adapter_config.json``."""
    conf = json.loads((Path(adapter_path) / "adapter_config.json").read_text())
    return int(conf["r"]), int(conf["lora_alpha"])


def out_of_place_sync(vg) -> bool:
    """Make TRL's vLLM weight sync merge the LoRA out of place (:func:`samplers.merged_named_params`)
    instead of merging into the bf16 base and unmerging, which drifts the base a little every step.
    Only for one process without FSDP / DeepSpeed (there TRL gathers sharded weights around its own
    merge, which stays); returns whether it applied."""
    from peft import PeftModel

    if not isinstance(vg.model, PeftModel) or vg._dist.is_fsdp or vg.accelerator.num_processes > 1:
        return False
    fix = lambda n: vg._fix_param_name_to_vllm(n, extra_prefixes=["modules_to_save.default."])  # noqa: E731
    vg._iter_named_params = lambda: samplers.merged_named_params(vg.model, fix)
    return True


def check_vllm(cfg: GRPOConfig) -> None:
    """``use_vllm`` needs vLLM and a CUDA device: refuse before anything loads, saying what to do,
    rather than fail inside TRL at step 1."""
    if cfg.use_vllm == "off":
        return
    import importlib.util

    import torch

    if cfg.use_vllm == "colocate" and not torch.cuda.is_available():
        raise ValueError("grpo.use_vllm=colocate needs a CUDA GPU (none is visible): set grpo.use_vllm=off to sample "
                         "with transformers, or run this stage on a GPU work pool")
    if importlib.util.find_spec("vllm") is None:
        raise ValueError(f"grpo.use_vllm={cfg.use_vllm} needs vLLM, which is not installed: pip install 'progra[vllm]' "
                         "(or pip install vllm) on the GPU machine, or set grpo.use_vllm=off")
    if cfg.use_vllm == "server" and not cfg.vllm_server:
        raise ValueError("grpo.use_vllm=server needs grpo.vllm_server: the base URL of `trl vllm-serve --model <base>`")


def load_policy(base_path: str, adapter_path: str | None, dtype):
    """The base model, with the SFT adapter PAG-RL continues (π_θ'; TRL keeps a frozen copy as the
    KL reference). PEFT loads an adapter in fp32 over a bf16 base; under DeepSpeed ZeRO-3, which
    flattens parameters of one dtype, it is cast to the base's dtype (TRL does this on its own
    ``peft_config`` path only)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from transformers.integrations import is_deepspeed_zero3_enabled

    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    if not adapter_path:
        return model
    model = PeftModel.from_pretrained(model, adapter_path, is_trainable=True)
    if is_deepspeed_zero3_enabled():
        base = model.get_base_model().dtype
        for p in model.parameters():
            if p.requires_grad and p.dtype != base:
                p.data = p.data.to(base)
    return model


def build_trainer(episodes: Sequence[rollout.Episode], r: Recipe, cfg: GRPOConfig, base_path: str, adapter_path: str | None,
                  output_dir: str | Path, run: str = "", progress: Callable[[int, int], None] | None = None,
                  rubric: Rubric | None = None, log: Callable[[dict], None] | None = None,
                  docs_style: DocStyle = "json", checkpoints: Checkpointing | None = None,
                  tracking: Tracking | None = None, start_step: int = 0):
    """The PAG-RL trainer for these episodes and its tokenizer (``train_grpo`` runs it); with
    ``checkpoints`` it saves every ``save_steps``, the recorded rollouts and Dr. GRPO's fixed
    normaliser included."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig as TRLGRPOConfig

    if not episodes:
        raise ValueError("no GRPO episodes")
    check_vllm(cfg)
    r_alpha = cfg.lora_shape(adapter_shape(adapter_path) if adapter_path else None)
    cfg = cfg.model_copy(update={"lora_r": r_alpha[0], "lora_alpha": r_alpha[1]})
    preflight(memory.estimate_grpo, base_path, cfg, "lower grpo.micro_batch_size (a step still uses batch_size x "
              "num_generations streams) or grpo.max_seq_len, or serve vLLM elsewhere (use_vllm: server)")
    quiet_hf()
    recorder = Recorder(run, r.name, r.grpo, cfg.num_generations)
    rubric = rubric or rubric_for(r, cfg)
    vllm = {} if cfg.use_vllm == "off" else {
        "use_vllm": True, "vllm_mode": cfg.use_vllm, "vllm_max_model_length": cfg.max_seq_len,
        "vllm_gpu_memory_utilization": cfg.vllm_gpu_memory_utilization,
        **({"vllm_server_base_url": cfg.vllm_server} if cfg.vllm_server else {})}
    trackers, report_to = tracking_setup(tracking, start_step)
    saving = {"output_dir": str(output_dir), **device_kwargs(cfg.precision, cfg.gradient_checkpointing, cfg.accumulation_steps),
              **(checkpoints.trainer_kwargs() if checkpoints else {}), "report_to": report_to}
    args = TRLGRPOConfig(
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.device_batch,
        num_generations=cfg.num_generations, learning_rate=cfg.learning_rate, beta=cfg.beta, epsilon=cfg.epsilon,
        loss_type=r.loss_type(cfg.loss_type), scale_rewards=r.scale_rewards(), max_completion_length=cfg.max_seq_len,
        temperature=cfg.temperature, seed=cfg.seed, disable_dropout=True,
        vllm_importance_sampling_mode=cfg.importance_sampling, vllm_importance_sampling_clip_max=cfg.importance_sampling_cap,
        **saving, **vllm)
    tok = AutoTokenizer.from_pretrained(adapter_path or base_path)
    # the model loads after the training config: under ZeRO-3 that config makes from_pretrained partition it
    model = load_policy(base_path, adapter_path, weights_dtype(cfg.precision))
    peft_config = None if adapter_path else lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    score_labelled_positions_only()
    trainer = _trainer_class()(
        model=model, reward_funcs=reward_functions(rubric), args=args, processing_class=tok, peft_config=peft_config,
        train_dataset=Dataset.from_list([{"prompt": e.episode_id} for e in episodes]),
        rollout_func=_rollout_func({e.episode_id: e for e in episodes}, r, cfg, tok, recorder, rubric, docs_style),
        callbacks=step_callbacks(progress, log) + trackers)
    trainer.recorder = recorder
    if checkpoints:
        trainer.add_callback(checkpoint_callback(checkpoints, lambda folder: _save_run_state(trainer, folder)))
    if getattr(trainer, "vllm_generation", None) is not None:
        out_of_place_sync(trainer.vllm_generation)
    trainer.dr_grpo_tokens = cfg.dr_grpo_tokens
    quiet_trainer(trainer)
    return trainer, tok


def train_grpo(episodes: Sequence[rollout.Episode], r: Recipe, cfg: GRPOConfig, base_path: str, adapter_path: str | None,
               out_dir: str | Path, run: str = "", progress: Callable[[int, int], None] | None = None,
               rubric: Rubric | None = None, log: Callable[[dict], None] | None = None,
               docs_style: DocStyle = "json", checkpoints: Checkpointing | None = None,
               tracking: Tracking | None = None) -> tuple[dict, pa.Table]:
    """Train with PAG-RL (or the recipe's baseline rollout) and save the adapter to ``out_dir``;
    ``rubric`` defaults to the recipe's terms. Returns (metrics incl. TRL's log history, the
    rollouts table)."""
    import torch

    resume = checkpoints.resume_from() if checkpoints else None
    start = read_marker(resume)["step"] if resume else 0  # read now: the trainer rotates old checkpoints away
    with tempfile.TemporaryDirectory(prefix="progra-grpo-") as tmp:
        trainer, tok = build_trainer(episodes, r, cfg, base_path, adapter_path, tmp, run, progress, rubric, log, docs_style,
                                     checkpoints, tracking, start)
        init = _adapter_weights(trainer.model, "default") if adapter_path else {}
        if resume:
            _load_run_state(trainer, resume)
        t0 = time.perf_counter()
        trainer.train(resume_from_checkpoint=resume)
        seconds = time.perf_counter() - t0
        reference = _check_reference(trainer.model, init)
        save_adapter(trainer, tok, out_dir, selected_adapters=["default"])
        history = list(trainer.state.log_history)
    table = trainer.recorder.table(trainer.accelerator)
    steps = trainer.state.global_step
    tokens = table.column("tokens").to_pylist() + table.column("env_tokens").to_pylist()
    metrics = {
        "steps": steps, "seconds": round(seconds, 2), "resumed_from_step": start or None,
        "seconds_per_step": round(seconds / max(steps - start, 1), 3),
        "episodes": len(episodes), "rollouts": table.num_rows, **reference,
        "mean_reward_first": _mean_at(table, min(table.column("step").to_pylist() or [0])),
        "mean_reward_last": _mean_at(table, max(table.column("step").to_pylist() or [0])),
        "model_tokens_per_step": round(sum(table.column("tokens").to_pylist()) / max(steps, 1), 1),
        "stream_tokens_per_step": round(sum(tokens) / max(steps, 1), 1),
        "dr_grpo_tokens": trainer.dr_grpo_tokens, "device": "cuda" if torch.cuda.is_available() else "cpu",
        **world(trainer), "log_history": history,
    }
    return metrics, table


def _rank_files(trainer, folder: str) -> tuple[Path, Path]:
    k = trainer.accelerator.process_index
    return Path(folder) / f"rollouts-rank{k}.parquet", Path(folder) / f"run-state-rank{k}.json"


def _save_run_state(trainer, folder: str) -> dict:
    """What a resumed PAG-RL run needs beyond the trainer's own files, per process: its recorded
    rollouts (so the ``rollouts`` dataset has every step once) and Dr. GRPO's normaliser, fixed
    at the first step and never measured again."""
    import pyarrow.parquet as pq

    rollouts, state = _rank_files(trainer, folder)
    pq.write_table(pa.Table.from_pylist(trainer.recorder.rows, schema=ROLLOUTS), rollouts)
    state.write_text(json.dumps({"dr_grpo_tokens": trainer.dr_grpo_tokens}))
    return {}


def _load_run_state(trainer, folder: str) -> None:
    import pyarrow.parquet as pq

    rollouts, state = _rank_files(trainer, folder)
    if not rollouts.is_file() or not state.is_file():
        raise FileNotFoundError(f"{folder} has no run state of process {trainer.accelerator.process_index}: it was "
                                "saved with a different number of processes (launch.num_processes)")
    trainer.dr_grpo_tokens = json.loads(state.read_text())["dr_grpo_tokens"]
    trainer.recorder.rows = pq.read_table(rollouts).to_pylist()


def _adapter_weights(model, name: str) -> dict:
    """The adapter ``name``'s weights as full tensors on every rank: FSDP2 holds DTensor shards
    (gathered with ``full_tensor``, a collective every rank runs), ZeRO-3 empty partitions
    (gathered for the copy), so the reference check compares whole weights, never a shard with a
    full tensor."""
    params = {k.replace(f".{name}.", "."): v for k, v in model.named_parameters() if f".{name}." in k}
    with _gathered(list(params.values())):
        return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for k, v in params.items()}


def _gathered(params: list):
    """ZeRO-3's context that materialises partitioned parameters; nothing to do otherwise."""
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params)
    return nullcontext()


def _check_reference(model, init: dict) -> dict:
    """What the KL term was measured against, checked on the weights after training: with a loaded
    adapter, TRL's frozen ``ref`` copy must still equal the SFT adapter (π_θ')."""
    if "ref" not in getattr(model, "peft_config", {}):
        return {"kl_reference": "base_model"}
    ref = _adapter_weights(model, "ref")
    now = _adapter_weights(model, "default")
    same = bool(init) and ref.keys() == init.keys() and all(bool((ref[k] == init[k]).all()) for k in init)
    moved = max((float((now[k] - init[k]).abs().max()) for k in init), default=0.0)
    return {"kl_reference": "sft_adapter_copy", "ref_equals_sft_adapter": same, "policy_max_weight_change": moved}


def _mean_at(table: pa.Table, step: int) -> float | None:
    vals = [t for s, t in zip(table.column("step").to_pylist(), table.column("total_reward").to_pylist(), strict=True) if s == step]
    return round(sum(vals) / len(vals), 4) if vals else None
