"""Prefect task ``evaluate``: one model under test on the BFCL slice and the τ²-bench slice -> an
``eval_results`` dataset (``benchmark`` = bfcl | tau2).

Models under test are named as users name them (``base``, ``reasoning``, a ``models`` id, a
LiteLLM string); :func:`resolve_subjects` turns each name into how the gateway reaches it."""

from __future__ import annotations

from prefect import get_run_logger, task

from progra_core import methods, stages
from progra_core.config import PipelineConfig
from progra_core.evaluation import harness
from progra_core.evaluation.bfcl import Subject
from progra_core.methods import RECIPES
from progra_core.train.launch import release_memory
from storage import DatasetNotFound, DatasetRef, DatasetStore
from tasks.artifacts import Progress
from tasks.limits import gateway_for
from tasks.models import policy_path
from tasks.runtime import STAGE_TASK, already_committed, endpoint, key_env
from tasks.stage_tasks import commit, stage_fingerprint

__all__ = ["resolve_subjects", "evaluate_fingerprint", "evaluate", "trained_bfcl_ids", "check_no_leak"]

STAGE = stages.get("evaluate")


def _policy(cfg: PipelineConfig) -> tuple[str, dict]:
    """The base policy as a gateway model string (+ the local name it needs)."""
    policy = cfg.models.policy
    return (policy, {}) if policy.startswith("local/") else ("local/policy", {"policy": policy})


def resolve_subjects(cfg: PipelineConfig, store: DatasetStore, trained: str | None = None,
                     names: list[str] | None = None) -> tuple[list[tuple[Subject, list[str]]], dict]:
    """``(subject, parent ids)`` per name, and the ``local/<name>`` map the gateway needs.

    ``trained`` is this run's final model id; without one, ``trained`` means the method's
    untrained variant when it has no training (the Reasoning baseline) and is skipped otherwise."""
    model, local = _policy(cfg)
    out: list[tuple[Subject, list[str]]] = []
    for name in names or cfg.evaluate.models:
        if name == "trained" and trained is None:
            if cfg.method == "reasoning":
                name = "reasoning"
            else:
                get_run_logger().warning("evaluate: no trained model in this run; skipping 'trained'")
                continue
        name = trained if name == "trained" else name
        if name == "base":  # under the training prompt, the base model is asked in the run's method's format
            aware = cfg.evaluate.prompt == "policy" and methods.recipe(cfg.method).awareness_prompt
            out.append((Subject("base", "base", model, awareness=aware), []))
        elif name == "reasoning":
            out.append((Subject("base", "reasoning", model, cot=True), []))
        elif "/" in name:  # a LiteLLM model string: an endpoint under test
            out.append((Subject(name, "endpoint", name, cfg.evaluate.api_base,
                                key_env(cfg.evaluate.api_key_env, cfg.evaluate.api_key_secret, cfg.evaluate.api_base)), []))
        else:
            try:
                ref = store.find(name)
            except DatasetNotFound:
                raise ValueError(f"evaluate: {name!r} is not base/reasoning/trained, a model id in the models view, "
                                 "or a LiteLLM model string (provider/model)") from None
            if ref.stage != "models":
                raise ValueError(f"evaluate: {name} is a {ref.stage!r} dataset, not a model")
            row = store.read(ref).to_pylist()[0]
            method = row["method"]
            awareness = RECIPES[method].awareness_prompt if method in RECIPES else method.startswith("pag")
            local[name] = (policy_path(cfg, cfg.storage.root), store.local_model(row["adapter_path"]))
            out.append((Subject(name, method, f"local/{name}", awareness=awareness), [name]))
    return out, local


def _trained_rows(store: DatasetStore, model_ids: list[str], columns: list[str]) -> list[dict]:
    """``columns`` of every trajectory in the lineage of these models (the trajectories their SFT
    data and RL episodes came from)."""
    found = []
    for model_id in model_ids:
        try:
            found.append(store.find(model_id))
        except DatasetNotFound:
            continue
    return [r for ref in store.lineage(found) if ref.stage == "trajectories" for r in store.read(ref, columns=columns).to_pylist()]


def trained_bfcl_ids(store: DatasetStore, model_ids: list[str]) -> set[str]:
    """The BFCL entry ids of every BFCL trajectory in the lineage of these models."""
    return {r["source_id"] for r in _trained_rows(store, model_ids, ["source", "source_id"]) if r["source"] == "bfcl" and r["source_id"]}


def trained_conversations(store: DatasetStore, model_ids: list[str]) -> set[tuple]:
    """(env, the user requests in order) of every trajectory in the models' lineage."""
    return {(r["env"], tuple(t["query"] for t in r["turns"] or [])) for r in _trained_rows(store, model_ids, ["env", "turns"])}


def check_no_leak(cfg: PipelineConfig, store: DatasetStore, subject: Subject, parents: list[str], entries: list[dict],
                  cases: list[dict]) -> None:
    """Refuse a held-out evaluation in which the model meets a scenario it was trained on: the split
    is checked on the data the model's lineage holds, not assumed from the config."""
    if not parents or cfg.evaluate.split != "held_out":
        return
    leaks = harness.leaked_runs(entries, cases, trained_bfcl_ids(store, parents))
    if cfg.evaluate.held_out:  # your envs' held-out trajectories: the same conversation must not have trained
        trained = trained_conversations(store, parents)
        leaks += [e["id"] for e in entries if e.get("env") and (e["env"], tuple(q[0]["content"] for q in e["question"])) in trained]
    if leaks:
        raise ValueError(f"evaluate: {len(leaks)} held-out runs share a BFCL scenario or a conversation with the training "
                         f"data of {subject.model_ref} (e.g. {', '.join(leaks[:3])}): ingest.held_out_percent or the data "
                         "differ between training and evaluation, or a file is both in ingest and in evaluate.held_out")


def evaluate_fingerprint(cfg: PipelineConfig, subject: Subject, parents: list[str]) -> str:
    """Hashes what the manifest records: ``Stage.config`` with the subject, and the model's id as parent."""
    return stage_fingerprint(STAGE.name, cfg, parents, subject=subject)


@task(name="evaluate", **STAGE_TASK, log_prints=False)
def evaluate(cfg: PipelineConfig, root: str, subject: Subject, local_models: dict, parents: list[str],
             output_stage: str = STAGE.output, dataset_id: str | None = None) -> DatasetRef:
    store = DatasetStore(root)
    dataset_id = dataset_id or evaluate_fingerprint(cfg, subject, parents)
    if store.exists(output_stage, dataset_id):
        already_committed(output_stage, dataset_id)
        return store.ref(output_stage, dataset_id)
    entries, tasks, cases = harness.planned_runs(cfg)
    check_no_leak(cfg, store, subject, parents, entries, cases)
    get_run_logger().info("evaluate %s (%s, prompt %s): %d next-call cases, %d entries (BFCL, your envs) + %d tau2 tasks x %d trials",
                          subject.model_ref, subject.method, cfg.evaluate.prompt, len(cases), len(entries), len(tasks),
                          cfg.evaluate.trials)
    gateway = gateway_for(cfg, root)
    gateway.local_models.update(local_models)
    try:
        table, rejects, stats = harness.evaluate_subject(
            cfg, gateway, subject, endpoint(cfg, "user_simulator"),
            lambda bench, n: Progress(f"evaluate-{subject.method}-{bench}", n, what="runs"))
        return commit(store, STAGE, table, dataset_id=dataset_id, parents=parents, rejects=rejects, stats=stats,
                      config=STAGE.config(cfg, subject=subject),
                      rows_in=stats["rows_in"], usage=gateway.usage_summary(),
                      title=f"evaluate: {subject.model_ref} ({subject.method})",
                      key=f"evaluate-{subject.method}-{subject.model_ref[:8]}")
    finally:
        gateway.close(unload_models=True)  # the next model under test loads into the memory this one held
        release_memory()
