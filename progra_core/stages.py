"""Every stage of the pipeline, declared once.

A :class:`Stage` names the step (what ``progra stage <name>`` and the ``stage-<name>`` deployment
call it), the dataset it writes and the datasets it reads, its config section, whether it wants a
GPU, and the core function that does the work. The Prefect task, the dataset fingerprint, the CLI
choices, the catalog views and ``deployments/prefect.yaml`` all follow from this table (a test
checks that they agree). Adding a stage = one core module + one entry in :data:`STAGES`.

Two contracts cover the data stages, after datatrove's one-block-one-contract rule:

* ``table``: ``run(cfg, tables, progress) -> (table, rejects, stats)`` over whole datasets;
* ``sharded`` (the paid LLM stages): ``items(cfg, tables) -> rows``, then
  ``process(cfg, part, gateway, endpoint) -> shard table`` per shard (resumable, mapped over the
  flow's task runner), then ``finish(table) -> (table, rejects, stats)``.

``tables`` maps each dataset name in ``inputs`` (the datasets the caller passes) and ``reads``
(their ancestors, found through lineage) to its Arrow table. ``custom`` stages (synthesize, which
writes two datasets, and the model stages sft, grpo, evaluate) declare the same facts but run
through their own task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from progra_core import methods
from progra_core.config import PipelineConfig
from progra_core.data import augment, awareness, ingest, mix, segment, sft_data, synthesize, verify
from progra_core.envs import registry
from progra_core.evaluation import harness
from progra_core.llm.types import Endpoint
from progra_core.schemas import DATASETS
from progra_core.train import grpo, sft

__all__ = ["Stage", "STAGES", "STAGE_NAMES", "get", "Outcome", "Progress"]

#: (rows out, rejects, stats): what every data stage returns.
Outcome = tuple[pa.Table, list[dict], dict]
Progress = Callable[[int, int], None] | None
Tables = Mapping[str, pa.Table]


def _never(cfg: PipelineConfig) -> bool:
    return False


def _always(cfg: PipelineConfig) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    name: str  #: the step, as the CLI and the deployments name it
    output: str  #: the dataset it writes (its catalog view)
    help: str  #: one line for the CLI and the docs
    section: str  #: its config section: what of the config enters its fingerprint
    code_version: str
    kind: Literal["table", "sharded", "custom"]
    inputs: tuple[str, ...] = ()  #: datasets the caller passes, in order (``--input`` ids)
    reads: tuple[str, ...] = ()  #: ancestors of ``inputs[0]`` the stage also reads (lineage)
    role: str | None = None  #: the LLM role it calls (``models.<role>``), part of its fingerprint
    gpu: Callable[[PipelineConfig], bool] = _never  #: runs on the GPU pool when dispatched
    gpu_pool: bool = False  #: its deployment is on the GPU pool (``gpu`` may be true for some configs)
    title: str = ""  #: heading of its funnel artifact
    payload: Callable[..., Any] | None = None  #: the config part of its fingerprint: ``(cfg, **context)``
    run: Callable[[PipelineConfig, Tables, Progress], Outcome] | None = None
    items: Callable[[PipelineConfig, Tables], list[dict]] | None = None
    id_key: str = ""
    shard_size: Callable[[PipelineConfig], int] | None = None
    process: Callable[[PipelineConfig, list[dict], Any, Endpoint], pa.Table] | None = None
    finish: Callable[[pa.Table | None], Outcome] | None = None
    also_writes: tuple[str, ...] = field(default=())  #: other datasets a custom stage writes

    @property
    def schema(self) -> pa.Schema:
        return DATASETS[self.output]

    def config(self, cfg: PipelineConfig, **context: Any) -> Any:
        """What of ``cfg`` this stage's output depends on: hashed into its dataset id *and* stored as
        its manifest's ``config`` (one dict for both, so an id can be recomputed from its manifest).
        ``context``: what a run adds beyond the config (evaluate: the model under test)."""
        if self.payload is not None:
            return self.payload(cfg, **context)
        section = cfg.section(self.section)
        if self.role is None:
            return section
        return {"section": section, self.role: role_payload(cfg, self.role)}

    def input_error(self, given: Sequence[Any]) -> str | None:
        """Why ``given`` is not what this stage reads (None when it is): one rule for every way a stage
        starts (CLI, deployment, flow). Items are dataset ids (only their number is checked) or refs
        with ``dataset_id`` and ``stage``."""
        want = " and ".join(repr(i) for i in self.inputs) or "no input"
        if len(given) != len(self.inputs):
            return (f"stage {self.name!r} reads {want}: give {len(self.inputs)} input id(s), got {len(given)} "
                    f"(progra datasets {' '.join(self.inputs)})")
        for label, ref in zip(self.inputs, given, strict=True):
            stage = getattr(ref, "stage", None)
            if stage is not None and stage != label:
                return f"stage {self.name!r} reads a {label!r} dataset, but {ref.dataset_id} is {stage!r}"
        return None


def role_payload(cfg: PipelineConfig, role: str) -> dict:
    """What of a role's model config a stage depends on (the model and its endpoint, never the key)."""
    return {"model": getattr(cfg.models, role), "api_base": cfg.models.api_base.get(role)}


def _local_verifier(cfg: PipelineConfig) -> bool:
    return cfg.models.verifier.startswith("local/")


def _synthesize_payload(cfg: PipelineConfig) -> dict:
    """The attempts depend on the section (less the mix knobs), the three roles and the seed pool."""
    section = {k: v for k, v in cfg.section("synthesize").items() if k not in ("enabled", "mix", "keep_ingested")}
    if cfg.synthesize.env != "bfcl":  # a plugin: its seeds are in the section; its code is hashed
        return {"section": section, "roles": {r: role_payload(cfg, r) for r in synthesize.ROLES},
                "env": registry.identity(cfg.synthesize.env)}
    return {"section": section, "roles": {r: role_payload(cfg, r) for r in synthesize.ROLES},
            "seed_pool": {"category": "base", "split": "train", "held_out_percent": cfg.ingest.held_out_percent,
                          "bfcl_eval": ingest.bfcl_version()}}


def plugins(cfg: PipelineConfig) -> dict:
    """The config's own envs (spec and source bytes) for the fingerprints of the stages that run
    them or read their docs (ingest, PAG-RL, evaluation); empty without plugins, so BFCL-only ids
    do not change."""
    return {"envs": {name: registry.identity(name) for name in sorted(cfg.envs)}} if cfg.envs else {}


def _sft_payload(cfg: PipelineConfig) -> dict:
    """Methods that share the SFT data share the adapter (progra, w/o PAG-RL, PAG+MT-GRPO)."""
    return {"sft": cfg.section("sft"), "data": methods.recipe(cfg.method).sft, "policy": cfg.models.policy,
            "validation_percent": cfg.sft_data.validation_percent, "tool_docs": cfg.tool_docs}


def _grpo_payload(cfg: PipelineConfig) -> dict:
    r = methods.recipe(cfg.method)
    return {"grpo": cfg.section("grpo"), "mode": r.grpo, "loss_type": r.loss_type(cfg.grpo.loss_type),
            "scale_rewards": r.scale_rewards(), "awareness_prompt": r.awareness_prompt, "policy": cfg.models.policy,
            "reward_terms": list(r.reward_terms), "tool_docs": cfg.tool_docs, **plugins(cfg),
            **{t: role_payload(cfg, grpo.MODEL_TERMS[t].role) for t in r.reward_terms if t in grpo.MODEL_TERMS}}


STAGES: tuple[Stage, ...] = (
    Stage("ingest", "trajectories", "BFCL's train split, tau2 train tasks, JSONL / HF folders -> D", "ingest",
          ingest.CODE_VERSION, "table", title="Ingest",
          payload=lambda cfg: {**ingest.fingerprint_inputs(cfg.ingest), **plugins(cfg)},
          run=lambda cfg, t, progress: ingest.ingest(cfg.ingest, progress)),
    Stage("synthesize", "synthesized", "APIGen-MT-style verified trajectories in the BFCL envs or your own (App. B)", "synthesize",
          synthesize.CODE_VERSION, "custom", title="Synthesis (Appendix B)", payload=_synthesize_payload,
          also_writes=("synthesis_attempts",)),
    Stage("mix", "trajectories", "D = ingested + a share of the synthesized trajectories", "synthesize",
          mix.CODE_VERSION, "table", inputs=("trajectories", "synthesized"), title="Mix: ingested + synthesized",
          payload=lambda cfg: mix.mix_config(cfg.synthesize),
          run=lambda cfg, t, progress: mix.mix(t["trajectories"], t["synthesized"], cfg.synthesize)),
    Stage("segment", "segments", "tau' = (info_meta, c_his, q, a_fc, c_fut), one per action step (Eq. 7; a turn's call list or one call, ingest.step_mode)", "segment",
          segment.CODE_VERSION, "table", inputs=("trajectories",), title="Segment",
          run=lambda cfg, t, progress: segment.segment(t["trajectories"], cfg.segment)),
    Stage("awareness", "awareness", "S^a = summary + plan + rationale by LLM_gen, with retries (Eq. 8)", "awareness",
          awareness.CODE_VERSION, "sharded", inputs=("segments",), role="generator", title="Awareness",
          items=lambda cfg, t: awareness.select_segments(t["segments"].to_pylist(), cfg.awareness.limit, cfg.awareness.select),
          id_key="segment_id", shard_size=lambda cfg: cfg.awareness.shard_size,
          process=lambda cfg, part, gw, ep: awareness.annotate(part, gw, ep.model, cfg.awareness, ep.api_base, ep.api_key_env),
          finish=awareness.split_outcomes),
    Stage("verify", "verified", "LLM_ver rebuilds a_fc from S^a + info_meta alone; keep if schema_equal (Eq. 9-10)", "verify",
          verify.CODE_VERSION, "sharded", inputs=("awareness",), reads=("segments",), role="verifier",
          gpu=_local_verifier, gpu_pool=True, title="Model-aware verification",
          items=lambda cfg, t: verify.verify_items(t["awareness"], t["segments"]),
          id_key="awareness_id", shard_size=lambda cfg: cfg.verify.shard_size,
          process=lambda cfg, part, gw, ep: verify.verify_shard(part, gw, ep.model, cfg.verify, ep.api_base, ep.api_key_env),
          finish=verify.split_outcomes),
    Stage("augment", "augmented", "D_aug: paraphrase | schema_perturb | word_mask of D_ver (Eq. 11)", "augment",
          augment.CODE_VERSION, "sharded", inputs=("verified",), reads=("awareness", "segments"), role="augmenter",
          title="Augmentation",
          items=lambda cfg, t: augment.augment_items(t["verified"], t["awareness"], t["segments"]),
          id_key="awareness_id", shard_size=lambda cfg: cfg.augment.shard_size,
          process=lambda cfg, part, gw, ep: augment.augment_shard(part, gw, ep.model, cfg.augment, ep.api_base, ep.api_key_env),
          finish=augment.split_outcomes),
    Stage("sft_data", "sft_examples", "D_sft = D_aug + D_cs as chat examples, train/validation", "sft_data",
          sft_data.CODE_VERSION, "table", inputs=("augmented",), reads=("segments",), title="SFT data",
          payload=lambda cfg: {"section": cfg.section("sft_data"), "tool_docs": cfg.tool_docs},
          run=lambda cfg, t, progress: sft_data.sft_data(t["augmented"].to_pylist(),
                                                          {r["segment_id"]: r for r in t["segments"].to_pylist()}, cfg.sft_data,
                                                          cfg.tool_docs)),
    Stage("sft", "models", "LoRA warm-up SFT on D_sft -> pi_theta' (3.2)", "sft", sft.CODE_VERSION, "custom",
          inputs=("sft_examples",), gpu=_always, gpu_pool=True, payload=_sft_payload, also_writes=("train_log",)),
    Stage("grpo", "models", "PAG-RL: awareness-guided multi-turn GRPO in the executable envs (3.3)", "grpo",
          grpo.CODE_VERSION, "custom", inputs=("trajectories",), gpu=_always, gpu_pool=True, payload=_grpo_payload,
          also_writes=("rollouts", "train_log")),
    Stage("evaluate", "eval_results", "BFCL multi-turn (+ tau2) for base and trained models (4.2)", "evaluate",
          harness.CODE_VERSION, "custom", gpu=_always, gpu_pool=True,
          payload=lambda cfg, subject: {**harness.payload(cfg, subject), **plugins(cfg)}),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
_BY_NAME = {s.name: s for s in STAGES}


def get(name: str) -> Stage:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; choose from {', '.join(STAGE_NAMES)}") from None
