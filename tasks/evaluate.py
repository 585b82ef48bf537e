"""Prefect task ``evaluate``: one model under test on the BFCL slice and the τ²-bench slice -> an
``eval_results`` dataset (``benchmark`` = bfcl | tau2).

Models under test are named as users name them (``base``, ``reasoning``, a ``models`` id, a
LiteLLM string); :func:`resolve_subjects` turns each name into how the gateway reaches it."""

from __future__ import annotations

import time
from dataclasses import asdict

import pyarrow as pa
from prefect import get_run_logger, task

from progra_core import evaluate as core
from progra_core import evaluate_tau2
from progra_core.config import PipelineConfig
from progra_core.evaluate import Subject
from progra_core.methods import RECIPES
from storage import DatasetRef, DatasetStore, fingerprint
from storage.store import DatasetNotFound
from tasks._common import Progress, commit, dataset_cache_key, key_env, role_kwargs

__all__ = ["resolve_subjects", "evaluate_fingerprint", "evaluate"]


def _policy(cfg: PipelineConfig) -> tuple[str, dict]:
    """The base policy as a gateway model string (+ the local name it needs)."""
    policy = cfg.models.policy
    return (policy, {}) if policy.startswith("local/") else ("local/policy", {"policy": policy})


def resolve_subjects(cfg: PipelineConfig, store: DatasetStore, trained: str | None = None,
                     names: list[str] | None = None) -> tuple[list[tuple[Subject, list[str]]], dict]:
    """``(subject, parent ids)`` per name, and the ``local/<name>`` map the gateway needs.

    ``trained`` is this run's final model id; without one, ``trained`` means the method's
    untrained variant when it has no training (the Reasoning baseline) and is skipped otherwise."""
    from tasks._common import policy_path

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
        if name == "base":
            out.append((Subject("base", "base", model), []))
        elif name == "reasoning":
            out.append((Subject("base", "reasoning", model, cot=True), []))
        elif "/" in name:  # a LiteLLM model string: an endpoint under test
            out.append((Subject(name, "endpoint", name, cfg.evaluate.api_base,
                                key_env(cfg.evaluate.api_key_env, cfg.evaluate.api_key_secret)), []))
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
            local[name] = (policy_path(cfg, cfg.storage.root), row["adapter_path"])
            out.append((Subject(name, method, f"local/{name}", awareness=awareness), [name]))
    return out, local


def evaluate_fingerprint(cfg: PipelineConfig, subject: Subject, parents: list[str]) -> str:
    section = {k: v for k, v in cfg.section("evaluate").items() if k not in ("models", "api_base", "api_key_env", "api_key_secret")}
    payload = {"evaluate": section, "subject": asdict(subject), "policy": cfg.models.policy,
               "held_out_percent": cfg.ingest.held_out_percent}
    if cfg.evaluate.tau2_domains:  # the user simulator shapes every tau2 conversation
        from progra_core.envs.tau2 import tau2_version

        payload["user_simulator"] = {"model": cfg.models.user_simulator, "api_base": cfg.models.api_base.get("user_simulator"),
                                     "tau2": tau2_version(), "code": evaluate_tau2.CODE_VERSION}
    return fingerprint(core.OUTPUT, payload, parents or ["base"], core.CODE_VERSION)


@task(name="evaluate", cache_key_fn=dataset_cache_key, persist_result=True, log_prints=False)
def evaluate(cfg: PipelineConfig, root: str, subject: Subject, local_models: dict, parents: list[str],
             output_stage: str = core.OUTPUT, dataset_id: str | None = None) -> DatasetRef:
    from progra_core.llm import Gateway

    store = DatasetStore(root)
    dataset_id = dataset_id or evaluate_fingerprint(cfg, subject, parents)
    if store.exists(output_stage, dataset_id):
        return store.ref(output_stage, dataset_id)
    ev = cfg.evaluate
    entries = core.select_test_entries(ev, cfg.ingest.held_out_percent) if ev.categories else []
    tau2_tasks = evaluate_tau2.select_tau2_tasks(ev) if ev.tau2_domains else []
    runs = (len(entries) + len(tau2_tasks)) * ev.trials
    get_run_logger().info("evaluate %s (%s, prompt %s): %d BFCL entries + %d tau2 tasks x %d trials", subject.model_ref,
                          subject.method, ev.prompt, len(entries), len(tau2_tasks), ev.trials)
    gateway = Gateway.from_config(cfg, root)
    gateway.local_models.update(local_models)
    t0 = time.perf_counter()
    try:
        tables, rejects, seconds = [], [], {}
        if entries:
            table, rej = core.run_bfcl(entries, gateway, subject, ev, Progress(f"evaluate-{subject.method}-bfcl", len(entries) * ev.trials))
            tables.append(table)
            rejects += rej
            seconds["bfcl"] = round(time.perf_counter() - t0, 2)
        if tau2_tasks:
            t1 = time.perf_counter()
            user = {"model": cfg.models.user_simulator, **role_kwargs(cfg, "user_simulator")}
            table, rej = evaluate_tau2.run_tau2(tau2_tasks, gateway, subject, ev, user,
                                                Progress(f"evaluate-{subject.method}-tau2", len(tau2_tasks) * ev.trials))
            tables.append(table)
            rejects += rej
            seconds["tau2"] = round(time.perf_counter() - t1, 2)
        table = pa.concat_tables(tables) if tables else core.EVAL_RESULTS.empty_table()
        wall = time.perf_counter() - t0
        passed = sum(table.column("passed").to_pylist())
        stats = {"model_ref": subject.model_ref, "method": subject.method, "entries": len(entries), "tau2_tasks": len(tau2_tasks),
                 "runs": table.num_rows, "passed": passed, "seconds": round(wall, 2), "seconds_by_benchmark": seconds,
                 "seconds_per_run": round(wall / max(table.num_rows, 1), 2)}
        return commit(store, output_stage, table, dataset_id=dataset_id, parents=parents,
                      config={"evaluate": cfg.section("evaluate"), "subject": asdict(subject)},
                      code_version=core.CODE_VERSION, rejects=rejects, stats=stats,
                      title=f"evaluate: {subject.model_ref} ({subject.method})", rows_in=runs, usage=gateway.usage_summary())
    finally:
        gateway.close()
