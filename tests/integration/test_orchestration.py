"""Orchestration as users drive it, against a real ``prefect server start`` and real process
workers on progra-cpu and progra-gpu (started with setsid, stopped by PID), deployed from this
checkout with ``make deploy``:

- the full-pipeline deployment with ``dispatch.mode=work_pool``: every GPU stage runs as a flow run
  of its stage-<name> deployment on progra-gpu, completes, and its outputs are in the catalog;
- a failing dispatched stage fails the parent with the child's error;
- the data-refresh deployment has its nightly UTC cron and the scheduler created runs;
- stage-verify with a different verifier recomputes verify only; the data flow with that verifier
  then reuses it and recomputes only what follows;
- headless Chromium renders the full-pipeline run page with the config form.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
from datetime import UTC
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port

pytestmark = [pytest.mark.slow, pytest.mark.server]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
GPU_STAGES = ("verify", "sft", "grpo", "evaluate")


class Background:
    """A long-running command in its own process group (setsid), stopped by its PID."""

    def __init__(self, args: list[str], env: dict, log: Path, cwd: Path = REPO):
        self.log = log
        self._f = open(log, "wb")
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=self._f, stderr=subprocess.STDOUT, start_new_session=True)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    @staticmethod
    def stop_all(procs: list[Background]) -> None:
        """SIGINT, again after a grace period (a process worker often ignores the first), then SIGKILL."""
        for sig, grace in ((signal.SIGINT, 8), (signal.SIGINT, 5), (signal.SIGKILL, 5)):
            for p in procs:
                p.signal(sig)
            deadline = time.time() + grace
            while time.time() < deadline and any(p.proc.poll() is None for p in procs):
                time.sleep(0.2)
        for p in procs:
            p._f.close()


@pytest.fixture(scope="module")
def prefect_real(tmp_path_factory):
    """A real Prefect server on a loopback port, the deployments of this checkout, and one
    process worker per pool. Yields (api_url, env for Prefect clients)."""
    home = tmp_path_factory.mktemp("prefect-real")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2", "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "storage"),
           "PREFECT_LOGGING_LEVEL": "INFO", "PROGRA_CHECKOUT": str(REPO), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    prefect = str(REPO / ".venv" / "bin" / "prefect") if (REPO / ".venv/bin/prefect").exists() else shutil.which("prefect")
    procs: list[Background] = []
    try:
        server = Background([prefect, "server", "start"], {k: v for k, v in env.items() if k != "PREFECT_API_URL"},
                            home / "server.log")
        procs.append(server)
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"prefect server did not come up:\n{server.log.read_text()[-3000:]}")
            time.sleep(0.5)
        t0 = time.perf_counter()
        out = subprocess.run(["make", "-s", "deploy"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        print(f"make deploy: {time.perf_counter() - t0:.1f}s")
        for pool in ("progra-cpu", "progra-gpu"):
            procs.append(Background(["make", "-s", "worker", f"POOL={pool}"], env, home / f"worker-{pool}.log"))
        yield url, env
    finally:
        Background.stop_all(procs)


def _client_settings(url: str):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: url})


def _run(coro_fn, url: str):
    with _client_settings(url):
        return asyncio.run(coro_fn())


def _tiny_overrides(root: Path, tiny: Path, *extra: str) -> list[str]:
    """Every role is the tiny random llama; a few segments, one step of each training stage."""
    sets = [f"storage.root={root}", "ingest.limit=3", "awareness.limit=4", "awareness.shard_size=2", "verify.shard_size=2",
            "awareness.max_tokens=24", "synthesize.enabled=false", f"models.policy={tiny}",
            *(f"models.{r}=local/{tiny}" for r in ("generator", "verifier", "augmenter")),
            "evaluate.limit=1", "evaluate.next_call_limit=0", "sft_data.cold_start_min=16", "evaluate.select=shortest", "evaluate.categories=[base]", "evaluate.trials=1", "evaluate.max_tokens=8",
            "evaluate.max_steps_per_turn=2", "sft.max_steps=1", "sft.batch_size=2", "sft.max_length=2048",
            "grpo.max_steps=1", "grpo.max_action_tokens=88", "dispatch.poll_s=1"]
    return sets + list(extra)


@pytest.fixture(scope="module")
def other_tiny(tiny_llama, tmp_path_factory) -> Path:
    """A second tiny llama (other random weights): a different verifier that costs nothing."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(7)
    model = LlamaForCausalLM(LlamaForCausalLM.config_class.from_pretrained(tiny_llama))
    path = tmp_path_factory.mktemp("tiny-b") / "tiny-llama-b"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(path)
    return path


def test_full_pipeline_dispatches_gpu_stages_to_the_gpu_pool(prefect_real, tiny_llama, other_tiny, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterParentTaskRunId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment

    from storage import Catalog, DatasetStore

    url, _ = prefect_real
    root = tmp_path / "root"
    overrides = _tiny_overrides(root, tiny_llama, "dispatch.mode=work_pool")

    # -- a run triggered like the UI's "Run" button: the full-pipeline deployment on progra-cpu
    t0 = time.perf_counter()
    with _client_settings(url):
        parent = run_deployment("full-pipeline/full-pipeline", parameters={"profile": "embedded", "overrides": overrides},
                                timeout=600, poll_interval=1)
    wall = time.perf_counter() - t0
    assert parent.state.is_completed(), f"{parent.state.name}: {parent.state.message}"
    assert parent.work_pool_name == "progra-cpu"

    async def children():
        async with get_client() as c:
            runs = await c.read_flow_runs(flow_run_filter=FlowRunFilter(parent_task_run_id=FlowRunFilterParentTaskRunId(is_null_=False)))
            deps = {d.id: d.name for d in await c.read_deployments()}
            tree = {parent.id}
            for _ in range(4):  # the pipeline's subflows (data, train) and their children
                for r in runs:
                    if r.parent_task_run_id and (await c.read_task_run(r.parent_task_run_id)).flow_run_id in tree:
                        tree.add(r.id)
            return [(r, deps.get(r.deployment_id)) for r in runs if r.id in tree]

    runs = _run(children, url)
    dispatched = {dep: r for r, dep in runs if dep and dep.startswith("stage-")}
    assert sorted(dispatched) == sorted(f"stage-{s}" for s in GPU_STAGES), [(r.name, d) for r, d in runs]
    for dep, r in dispatched.items():
        assert r.work_pool_name == "progra-gpu" and r.state.is_completed(), (dep, r.work_pool_name, r.state)
    # -- the parent run's page holds the run's key artifacts (the funnel, models, Table 1, links to the
    # stage runs' own), and no run publishes one key twice (evaluate-funnel was published per model)
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def artifacts(ids):
        async with get_client() as c:
            return await c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)))

    arts = _run(lambda: artifacts([parent.id, *(r.id for r, _ in runs)]), url)
    mine = {a.key: a for a in arts if a.flow_run_id == parent.id and a.key}
    assert {"run-summary", "run-datasets"} <= set(mine), sorted(mine)
    summary = mine["run-summary"].data
    assert "## Data funnel" in summary and "| verified |" in summary and "## Models" in summary, summary
    assert "Accuracy (%): BFCL multi-turn" in summary and "(/artifacts/key/sft-curves)" in summary
    for run_id in {a.flow_run_id for a in arts}:
        keys = [a.key for a in arts if a.flow_run_id == run_id and a.key and a.type != "progress"]
        assert len(keys) == len(set(keys)), (run_id, keys)
    overhead = {dep: r.total_run_time.total_seconds() for dep, r in dispatched.items()}
    print(f"full pipeline via deployments: {wall:.1f}s wall; child run times {overhead}")

    # -- outputs came back through the shared root: each child's recorded ids are catalog datasets
    store = DatasetStore(root)
    cat = Catalog(str(root))
    stages = {r["dataset_id"]: (r["stage"], r["flow_run_id"]) for r in cat.sql("select dataset_id, stage, flow_run_id from datasets").to_pylist()}
    for dep, r in dispatched.items():
        ids = store.read_run_outputs(str(r.id))
        assert ids, dep
        for dataset_id in ids.values():
            stage, writer = stages[dataset_id]
            assert writer == str(r.id), (dep, stage)  # written by the GPU-pool run itself
    kinds = {stages[i][0] for r in dispatched.values() for i in store.read_run_outputs(str(r.id)).values()}
    assert kinds == {"verified", "models", "eval_results"}
    assert cat.sql("select count(*) n from eval_results").to_pylist()[0]["n"] == 2  # base + trained, one entry
    assert {m["stage"] for m in cat.sql("select stage from models").to_pylist()} == {"sft", "grpo"}

    # -- a dispatched stage that fails makes the parent fail with the child's own error
    from prefect import flow

    from flows.dispatch import StageRunFailed, dispatch_stage
    from progra_core.config import load_config
    from storage import DatasetRef

    cfg = load_config("embedded", overrides=overrides)

    @flow(name="dispatch-failure-probe")
    def probe():  # a ref to a dataset the worker's root does not hold
        dispatch_stage(cfg, "sft", DatasetRef("0000feedbeef0000", "sft_examples", "", 0))

    t0 = time.perf_counter()
    with _client_settings(url), pytest.raises(StageRunFailed, match="stage-sft.*0000feedbeef0000"):
        probe()
    print(f"failing dispatch surfaced in {time.perf_counter() - t0:.1f}s")

    # -- data-refresh: nightly cron in UTC, and the server's scheduler has created its runs
    async def refresh():
        async with get_client() as c:
            dep = await c.read_deployment_by_name("data-refresh/data-refresh")
            scheduled = await c.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["data-refresh"])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))))
            return dep, scheduled

    dep, scheduled = _run(refresh, url)
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in dep.schedules] == [("0 2 * * *", "UTC", True)]
    assert len(scheduled) >= 1
    assert {(t.hour, t.minute) for t in (r.expected_start_time.astimezone(UTC) for r in scheduled)} == {(2, 0)}

    # -- stage-verify with a different verifier: only verify recomputes
    awareness_id = next(i for i, (s, _) in stages.items() if s == "awareness")
    before = {r.dataset_id: r.created_at for r in store.list()}
    other = _tiny_overrides(root, tiny_llama, f"models.verifier=local/{other_tiny}")
    t0 = time.perf_counter()
    with _client_settings(url):
        child = run_deployment("stage/stage-verify", parameters={"input_dataset_id": [awareness_id], "overrides": other},
                               timeout=300, poll_interval=1)
    assert child.state.is_completed(), child.state.message
    print(f"stage-verify deployment run: {time.perf_counter() - t0:.1f}s wall, {child.total_run_time.total_seconds():.1f}s running")
    assert child.work_pool_name == "progra-gpu"
    after = {r.dataset_id: r for r in store.list()}
    new = [r for i, r in after.items() if i not in before]
    assert [r.stage for r in new] == ["verified"] and list(new[0].parents) == [awareness_id]
    assert all(after[i].created_at == c for i, c in before.items())  # nothing upstream rewritten
    assert store.read_run_outputs(str(child.id)) == {"verified": new[0].dataset_id}

    # ... and the data flow with that verifier reuses it, recomputing only what follows verify
    from flows.data import data_flow

    with _client_settings(url):
        refs = data_flow(load_config("embedded", overrides=other))
    assert refs["verified"].dataset_id == new[0].dataset_id
    later = {r.dataset_id: r.stage for r in store.list() if r.dataset_id not in after}
    assert sorted(later.values()) == ["augmented", "funnel", "sft_examples"]
    assert {refs[k].dataset_id for k in ("trajectories", "segments", "awareness")} <= set(before)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed (make setup installs it as root)")
def test_ui_run_page_shows_the_config_form(prefect_real, tmp_path):
    from prefect.client.orchestration import get_client

    url, _ = prefect_real

    async def ids():
        async with get_client() as c:
            return {n: (await c.read_deployment_by_name(n)).id for n in ("full-pipeline/full-pipeline", "stage/stage-verify")}

    deps = _run(ids, url)
    base = url.removesuffix("/api")

    def render(path: str) -> str:
        out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                              "--disable-background-networking", "--disable-component-update", "--disable-sync",
                              f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=20000", "--dump-dom",
                              f"{base}{path}"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    page = render(f"/deployments/deployment/{deps['full-pipeline/full-pipeline']}/run")
    assert "Create Flow Run for Deployment" in page
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    # section titles, field labels and field descriptions of PipelineConfig, rendered as a form
    for needle in ("config (Optional) the whole pipeline config", "profile (Optional)", "overrides (Optional) key=value",
                   "Dispatch (Optional)", "Awareness (Optional)", "Max Tokens", "Task Runner", "work_pool",
                   "Storage root: a local folder", "LLM_ver: the frozen target policy"):
        assert needle in text, needle
    stage_page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", render(f"/deployments/deployment/{deps['stage/stage-verify']}/run")))
    for needle in ("input_dataset_id (Optional) the input dataset ids", "overrides (Optional) config fields to change"):
        assert needle in stage_page, needle
    # help text keeps its placeholders ("default /catalog.duckdb" when they were <root>), and the
    # stage deployment's page says which stage it reruns (all shared one description)
    assert "default {root}/catalog.duckdb" in text
    async def description():
        async with get_client() as c:
            return (await c.read_deployment_by_name("stage/stage-verify")).description

    assert _run(description, url).startswith("Rerun stage verify (awareness -> verified)")
    if shots := os.environ.get("PROGRA_SCREENSHOTS"):  # for a person to look at (the UI check)
        async def latest_run():
            async with get_client() as c:
                fid = (await c.read_flow_by_name("full-pipeline")).id
                runs = await c.read_flow_runs(limit=50)
                return next((r.id for r in runs if r.flow_id == fid and r.state and r.state.is_completed()), None)

        pages = {"run-form": f"/deployments/deployment/{deps['full-pipeline/full-pipeline']}/run",
                 "stage-verify-form": f"/deployments/deployment/{deps['stage/stage-verify']}/run", "artifacts": "/artifacts"}
        if (run_id := _run(latest_run, url)) is not None:
            pages["run-page"] = f"/runs/flow-run/{run_id}?tab=Artifacts"
        Path(shots).mkdir(parents=True, exist_ok=True)
        for name, path in pages.items():
            subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                            f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=20000", "--window-size=1400,1800",
                            f"--screenshot={Path(shots) / f'{name}.png'}", f"{base}{path}"], capture_output=True, timeout=120)
