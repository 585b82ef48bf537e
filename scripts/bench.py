"""`make bench`: one table of ratios, ours against the plain way of doing the same job.

    awareness    the awareness stage (Prefect flow, shards, cache, parsing) vs a bare asyncio +
                 openai loop; same llm-katan echo server (fixed --latency-ms), same concurrency
                 (16 and 64; 30 requests per slot, so both run ~30 latency rounds)
    rerun        a cached `progra run` vs the first one on an empty storage root (the embedded
                 profile cut to a few minutes: every stage runs, each on a small slice)
    sql          `progra sql` (Catalog.sql) on a 1M-row awareness dataset vs duckdb.read_parquet
    env          BFCLEnv steps/s vs BFCL's own executor (eval of call strings)
    budget       env steps/s with the execution budget vs without it
    verify       local verification batched (local_batch_size=8) vs one request at a time
    localeval    local BFCL evaluation (3 shortest held-out entries, base model) with vs without
                 prefix reuse (llm.local_prefix_cache_mb); outputs must be identical
    guided       guided (grammar) verification with vs without prompt reuse; outputs identical
    dask, ray    the awareness stage's shards on a local Dask / Ray cluster vs on threads
                 (spin-up included, and measured alone on a one-shard run)

Run: .venv/bin/python scripts/bench.py [--only awareness,sql] [--repeats 3] [--json out.json]
Medians of repeated runs; numbers are printed, never asserted. Work goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flows.env import in_process_settings, prepare  # noqa: E402


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# -- awareness stage vs a bare client loop ----------------------------------------------------

def echo_server(work: Path, *flags: str):
    """An llm-katan echo server on a free loopback port (the tests' launcher: own process group,
    stopped by PID)."""
    from tests.conftest import Server, free_port

    srv = Server(["--backend", "echo", "--model", "echo", "--disable-dashboard", *flags], free_port(), "echo",
                 work / "katan.log")
    srv.wait(60)
    return srv


def bench_awareness(work: Path, repeats: int, concurrency: int = 16, latency_ms: int = 500) -> dict:
    """Segments per second through the stage vs the same requests from a bare AsyncOpenAI loop;
    30 requests per in-flight slot on both sides."""
    from openai import AsyncOpenAI

    from flows.stage_flow import stage
    from progra_core.config import load_config
    from progra_core.prompts import awareness as prompts
    from progra_core.prompts.tools import render_tools
    from tests.reliability import echo_data

    n = 30 * concurrency
    srv = echo_server(work, "--latency-ms", str(latency_ms), "--max-concurrent", "256")
    try:
        base = echo_data.bfcl_segment_rows()
        cfg_of = lambda root: load_config("embedded", overrides=[  # noqa: E731
            f"storage.root={root}", "models.generator=openai/echo", "models.api_base=" + json.dumps({"generator": srv.api_base}),
            "awareness.generator=llm", "awareness.limit=null", f"awareness.shard_size={2 * concurrency}", f"llm.concurrency={concurrency}",
            "dispatch.max_workers=4"])
        warm = work / f"aw-warm-{concurrency}"  # the first flow run in a process starts Prefect's ephemeral server
        stage(name="awareness", input_dataset_id=echo_data.write_echo_segments(warm, 8, base), profile=None, config=cfg_of(warm))
        roots = iter(work / f"aw-{concurrency}-{k}" for k in range(repeats))

        def ours():
            root = next(roots)  # a fresh root each time: nothing cached
            seg = echo_data.write_echo_segments(root, n, base)
            out = stage(name="awareness", input_dataset_id=seg, profile=None, config=cfg_of(root))
            assert out["awareness"]

        rows = echo_data.echo_segment_rows(n, base)
        messages = [prompts.awareness_messages(r, render_tools(r["tools"])) for r in rows]
        max_tokens = cfg_of(work).awareness.max_tokens

        async def bare_loop():
            client = AsyncOpenAI(base_url=srv.api_base, api_key="EMPTY")
            sem = asyncio.Semaphore(concurrency)

            async def one(m):
                async with sem:
                    r = await client.chat.completions.create(model="echo", messages=m, max_tokens=max_tokens, temperature=0.0)
                    return r.choices[0].message.content

            out = await asyncio.gather(*(one(m) for m in messages))
            await client.close()
            assert len(out) == n

        t_ours = median_time(ours, repeats)
        t_bare = median_time(lambda: asyncio.run(bare_loop()), repeats)
    finally:
        srv.stop()
    return {"name": f"awareness stage vs asyncio+openai ({n} segments, concurrency {concurrency}, {latency_ms} ms)",
            "ours": n / t_ours, "baseline": n / t_bare, "unit": "segments/s", "ratio": (n / t_ours) / (n / t_bare),
            "goal": ">= 0.98"}


def bench_awareness64(work: Path, repeats: int) -> dict:
    return bench_awareness(work, repeats, concurrency=64)


# -- shard tasks on Dask / Ray vs threads -----------------------------------------------------

def _bench_runner(work: Path, repeats: int, runner: str, n: int = 256) -> dict:
    """The awareness stage with its shards on ``runner`` vs on threads, same echo server (200 ms),
    same shards (16 segments) and concurrency; each stage run starts its own local cluster, so the
    rate includes spin-up, which a one-shard run (8 segments) measures alone."""
    from flows.stage_flow import stage
    from progra_core.config import load_config
    from tests.reliability import echo_data

    srv = echo_server(work, "--latency-ms", "200", "--max-concurrent", "256")
    try:
        base = echo_data.bfcl_segment_rows()
        roots = iter(work / f"runner-{runner}-{k}" for k in range(10 * repeats + 10))

        def run(kind: str, size: int) -> float:
            root = next(roots)
            cfg = load_config("embedded", overrides=[
                f"storage.root={root}", "models.generator=openai/echo", "models.api_base=" + json.dumps({"generator": srv.api_base}),
                "awareness.generator=llm", "awareness.limit=null", "awareness.shard_size=16", "llm.concurrency=8", "dispatch.max_workers=4",
                f"dispatch.task_runner={kind}"])
            seg = echo_data.write_echo_segments(root, size, base)
            t = time.perf_counter()
            assert stage(name="awareness", input_dataset_id=seg, profile=None, config=cfg)["awareness"]
            return time.perf_counter() - t

        run("thread", 8)  # the process's first flow run starts Prefect's ephemeral server
        spin = {k: statistics.median(run(k, 8) for _ in range(repeats)) for k in ("thread", runner)}
        rate = {k: n / statistics.median(run(k, n) for _ in range(repeats)) for k in ("thread", runner)}
    finally:
        srv.stop()
    return {"name": f"awareness shards on {runner} vs threads ({n} segments, 16 per shard, 4 workers, 200 ms; "
                    f"one-shard run {spin[runner]:.1f} s vs {spin['thread']:.1f} s)",
            "ours": rate[runner], "baseline": rate["thread"], "unit": "segments/s", "ratio": rate[runner] / rate["thread"],
            "goal": "—"}


def bench_dask(work: Path, repeats: int) -> dict:
    return _bench_runner(work, repeats, "dask")


def bench_ray(work: Path, repeats: int) -> dict:
    return _bench_runner(work, repeats, "ray")


# -- cached rerun vs first run ----------------------------------------------------------------

def bench_rerun(work: Path, repeats: int) -> dict:
    """`progra run` on the embedded profile, cut to a few minutes (every stage on a small slice),
    on an empty root, then again: the rerun replays every stage from its cached artifacts."""
    root = work / "run-root"
    env = {**os.environ, "PROGRA_MODELS_DIR": str(REPO / ".progra" / "models")}  # the provisioned embedded model
    env.pop("PREFECT_HOME", None)
    small = ["synthesize.enabled=false", "awareness.limit=4", "sft.max_steps=2", "grpo.max_steps=1", "grpo.episodes=1",
             "evaluate.next_call_limit=4", "evaluate.max_steps_per_turn=1"]
    cmd = [str(Path(sys.executable).parent / "progra"), "run", "--profile", "embedded", "--set", f"storage.root={root}",
           *(a for o in small for a in ("--set", o))]

    def once() -> float:
        t = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t

    first = once()
    again = statistics.median(once() for _ in range(repeats))
    return {"name": "cached `progra run` vs its first run (embedded, small slices)", "ours": again, "baseline": first, "unit": "s",
            "ratio": again / first, "goal": "<= 0.05"}


# -- progra sql vs raw DuckDB ------------------------------------------------------------------

def _awareness_dataset(root: Path, rows: int):
    """A store at ``root`` holding one awareness dataset of ``rows`` synthetic rows."""
    import pyarrow as pa

    from progra_core.data.awareness import AWARENESS
    from storage import DatasetStore

    store = DatasetStore(str(root))
    gens = ["openai/gpt-4o", "hosted_vllm/qwen", "local/smollm2"]
    cols = {
        "awareness_id": [f"{i:016x}" for i in range(rows)], "segment_id": [f"bfcl:multi_turn_base_{i // 40}#t{i % 8}s{i % 5}" for i in range(rows)],
        "generator": [gens[i % 3] for i in range(rows)], "prompt_version": ["v1"] * rows,
        "text": [f"<summary>user goal {i}</summary><plan>next step {i}</plan>" for i in range(rows)],
        "summary": [f"user goal {i}" for i in range(rows)], "plan": [f"next step {i}" for i in range(rows)],
        "rationale": [""] * rows, "attempts": [1 + i % 2 for i in range(rows)], "retries": [i % 3 for i in range(rows)],
        "latency_ms": [float(i % 997) for i in range(rows)], "prompt_tokens": [500 + i % 300 for i in range(rows)],
        "completion_tokens": [60 + i % 40 for i in range(rows)], "created_at": [None] * rows,
    }
    return store, store.write("awareness", pa.Table.from_pydict(cols, schema=AWARENESS), config={"bench": rows})


def bench_sql(work: Path, repeats: int, rows: int = 1_000_000) -> dict:
    import duckdb

    from storage import Catalog

    root = work / "sql-root"
    store, ref = _awareness_dataset(root, rows)
    query = ("select generator, count(*) n, avg(attempts) attempts, sum(retries) retries, "
             "quantile_cont(latency_ms, 0.9) p90 from {src} where plan like '%step 9%' group by 1 order by 1")
    files = ", ".join(f"'{f}'" for f in store.files(ref))
    ours = lambda: Catalog(str(root)).sql(query.format(src="awareness"))  # noqa: E731  (a fresh catalog, as each `progra sql` is)
    raw = lambda: duckdb.sql(query.format(src=f"read_parquet([{files}])")).to_arrow_table()  # noqa: E731
    assert ours().to_pylist() == raw().to_pylist()
    t_ours, t_raw = median_time(ours, repeats * 3), median_time(raw, repeats * 3)
    t = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "progra"), "sql", query.format(src="awareness"), "--root", str(root)],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    cli = time.perf_counter() - t
    return {"name": f"`progra sql` vs duckdb.read_parquet ({rows:,} awareness rows; CLI process {cli:.1f} s)",
            "ours": t_ours, "baseline": t_raw, "unit": "s", "ratio": t_ours / t_raw, "goal": "~1.0, < 1 s"}


def bench_digest(work: Path, repeats: int, rows: int = 1_000_000) -> dict:
    """The cost of checking stored bytes: ``DatasetStore.read`` (manifest schema + each part's sha256,
    then Arrow from the checked bytes) vs ``pyarrow.parquet.read_table`` of the same files unchecked;
    and the first view of a fresh process (which hashes each part once) timed in the name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from storage import Catalog, DatasetStore
    from storage import store as store_mod

    root = work / "digest-root"
    store, ref = _awareness_dataset(root, rows)
    files = store.files(ref)
    ours = lambda: DatasetStore(str(root)).read(ref.dataset_id)  # noqa: E731
    raw = lambda: pa.concat_tables([pq.read_table(f) for f in files])  # noqa: E731
    assert ours().equals(raw())
    t_ours, t_raw = median_time(ours, repeats * 3), median_time(raw, repeats * 3)
    store_mod._INTACT.clear()
    t = time.perf_counter()
    Catalog(str(root)).sql("select count(*) from awareness")
    first = time.perf_counter() - t
    return {"name": f"checked read vs unchecked pyarrow read ({rows:,} awareness rows, {ref.bytes / 1e6:.0f} MB; "
                    f"first view of a process incl. hashing {first:.2f} s)",
            "ours": t_ours, "baseline": t_raw, "unit": "s", "ratio": t_ours / t_raw, "goal": "< 1.5"}


# -- BFCLEnv vs BFCL's executor ----------------------------------------------------------------

def _ours_env(entries, isolated: bool = False) -> int:
    from progra_core.calls import parse_calls
    from progra_core.envs.factory import make_env

    steps = 0
    for e in entries:
        env = make_env("bfcl", e["involved_classes"], e["initial_config"], isolated=isolated)
        for turn in e["ground_truth"]:
            if turn:
                steps += len(env.execute(parse_calls("[" + ", ".join(turn) + "]")))
    return steps


def _theirs_env(entries, tag: str) -> int:
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils as mtu

    steps = 0
    for e in entries:
        for turn in e["ground_truth"]:
            obs, _ = mtu.execute_multi_turn_func_call(turn, e["initial_config"], e["involved_classes"], tag, e["id"])
            steps += len(obs)
        for k in [k for k in vars(mtu) if k.startswith(tag)]:  # its instances live as module globals
            del vars(mtu)[k]
    return steps


def bench_env(work: Path, repeats: int) -> dict:
    """Replaying BFCL base ground truth; a step is one call; fresh instances per entry on both sides."""
    from progra_core.sources.bfcl import load_entries

    entries = load_entries("base")
    steps = _ours_env(entries)
    tags = iter(f"bench{i}" for i in range(repeats))
    t_ours = median_time(lambda: _ours_env(entries), repeats)
    t_theirs = median_time(lambda: _theirs_env(entries, next(tags)), repeats)
    return {"name": f"BFCLEnv vs BFCL executor ({len(entries)} base entries, {steps} steps)", "ours": steps / t_ours,
            "baseline": steps / t_theirs, "unit": "steps/s", "ratio": t_theirs / t_ours, "goal": ">= 1 (no eval)"}


def bench_isolation(work: Path, repeats: int) -> dict:
    """The cost of envs in a worker process the budget can kill (every env that runs model calls)
    against the same envs in this process, side by side: the replay of BFCL base ground truth,
    one env per entry, a pipe round trip per call."""
    from progra_core.envs.isolated import stop_workers
    from progra_core.sources.bfcl import load_entries

    entries = load_entries("base")
    steps = _ours_env(entries, isolated=True)
    t_iso = median_time(lambda: _ours_env(entries, isolated=True), repeats)
    t_in = median_time(lambda: _ours_env(entries), repeats)
    stop_workers()
    return {"name": f"env calls in a killable worker process vs in process ({len(entries)} base entries, {steps} steps)",
            "ours": steps / t_iso, "baseline": steps / t_in, "unit": "steps/s", "ratio": t_in / t_iso,
            "goal": "per episode << a model step"}


def bench_budget(work: Path, repeats: int) -> dict:
    """The execution budget's cost: the same replay with every env call budgeted (watchdog,
    argument guards, arithmetic context) and with the budget bypassed, side by side."""
    from progra_core.envs import budget
    from progra_core.sources.bfcl import load_entries

    entries = load_entries("base")
    steps = _ours_env(entries)
    run_call, guard = budget.run_call, budget.guard_arguments
    t_on = median_time(lambda: _ours_env(entries), repeats)
    budget.run_call, budget.guard_arguments = (lambda cls, fn, seconds=None: fn()), (lambda *a, **k: None)
    try:
        t_off = median_time(lambda: _ours_env(entries), repeats)
    finally:
        budget.run_call, budget.guard_arguments = run_call, guard
    return {"name": f"env calls with vs without the execution budget ({steps} steps)", "ours": steps / t_on,
            "baseline": steps / t_off, "unit": "steps/s", "ratio": t_off / t_on, "goal": ">= 0.95"}


# -- batched vs one-at-a-time local verification -------------------------------------------------

def bench_verify(work: Path, repeats: int, n: int = 4) -> dict:
    from progra_core.config import load_config
    from progra_core.data.verify import verify_shard
    from progra_core.llm import Gateway, backends
    from tests.reliability import echo_data

    cfg = load_config("embedded")
    items = [{**s, "awareness_id": s["segment_id"], "text": echo_data.note(k)}
             for k, s in enumerate(echo_data.echo_segment_rows(n, echo_data.bfcl_segment_rows()))]
    models = Path(os.environ.get("PROGRA_MODELS_DIR", REPO / ".progra" / "models"))

    def run(batch: int) -> float:
        backends.clear_backends()  # a cold prefix cache for each side
        gw = Gateway(None, local_batch_size=batch, local_prefix_cache_mb=cfg.llm.local_prefix_cache_mb,
                     models_root=models)  # no response cache: every item is generated
        gw.batch([_hello(cfg.models.verifier)])  # load outside the clock
        t = time.perf_counter()
        out = verify_shard(items, gw, cfg.models.verifier, cfg.verify)
        assert out.num_rows == n
        return time.perf_counter() - t

    t_batched, t_single = run(8), run(1)
    backends.clear_backends()
    return {"name": f"local verification batched (8) vs one at a time ({n} rows, {cfg.models.verifier})",
            "ours": n / t_batched, "baseline": n / t_single, "unit": "rows/s", "ratio": t_single / t_batched, "goal": "> 1"}


# -- prefix reuse in local generation -----------------------------------------------------------
# Model rows run once per side (minutes of CPU each); side by side in one process.

def _hello(model: str):
    from progra_core.llm.types import ChatRequest

    return ChatRequest([{"role": "user", "content": "hi"}], model, max_tokens=2)


def bench_localeval(work: Path, repeats: int, entries: int = 3, docs: str | None = None) -> dict:
    """The embedded evaluation's BFCL loop on the 3 shortest held-out entries (base model), with
    and without the prefix cache, one after the other in this process; every step's text equal."""
    from progra_core.config import load_config
    from progra_core.evaluation.bfcl import Subject, run_bfcl, select_test_entries
    from progra_core.llm import Gateway, backends

    cfg = load_config("embedded")
    docs = docs or cfg.tool_docs
    ev = cfg.evaluate.model_copy(update={"limit": entries})
    chosen = select_test_entries(ev)
    models = Path(os.environ.get("PROGRA_MODELS_DIR", REPO / ".progra" / "models"))
    texts = {}

    def run(on: bool) -> float:
        backends.clear_backends()  # each side loads its own backend: nothing cached carries over
        gw = Gateway(None, local_batch_size=cfg.llm.local_batch_size, local_batch_tokens=cfg.llm.local_batch_tokens,
                     local_prefix_cache_mb=cfg.llm.local_prefix_cache_mb if on else 0,
                     local_static_cache=on and cfg.llm.local_static_cache, models_root=models)
        gw.batch([_hello(cfg.models.policy)])  # load outside the clock
        t = time.perf_counter()
        table, _ = run_bfcl(chosen, gw, Subject("base", "base", cfg.models.policy), ev, docs_style=docs)
        dt = time.perf_counter() - t
        texts[on] = [[s["text"] for s in r["steps"]] for r in table.to_pylist()]
        return dt

    t_on, t_off = run(True), run(False)
    backends.clear_backends()
    assert texts[False] == texts[True], "prefix reuse changed what the model wrote"
    return {"name": f"local BFCL eval with vs without prefix reuse + in-place decode cache ({entries} entries, {docs} docs, "
                    f"{cfg.models.policy}, same texts)",
            "ours": t_on / entries, "baseline": t_off / entries, "unit": "s/entry", "ratio": t_off / t_on, "goal": ">= 3"}


def bench_localeval_json(work: Path, repeats: int) -> dict:
    """The same with BFCL's own JSON function docs (~4.6k-token prompts, the issue's measurement)."""
    return bench_localeval(work, repeats, docs="json")


def bench_guided(work: Path, repeats: int, n: int = 4) -> dict:
    """Guided local verification with vs without the prompt's cache reused across its decisions."""
    from progra_core.config import load_config
    from progra_core.data.verify import verify_shard
    from progra_core.llm import Gateway, backends
    from tests.reliability import echo_data

    cfg = load_config("embedded")
    items = [{**s, "awareness_id": s["segment_id"], "text": echo_data.note(k)}
             for k, s in enumerate(echo_data.echo_segment_rows(n, echo_data.bfcl_segment_rows()))]
    models = Path(os.environ.get("PROGRA_MODELS_DIR", REPO / ".progra" / "models"))
    outs = {}

    def run(mb: int) -> float:
        backends.clear_backends()  # a cold cache each time: nothing kept from the last run
        gw = Gateway(None, local_batch_size=cfg.llm.local_batch_size, local_prefix_cache_mb=mb,
                     local_static_cache=bool(mb) and cfg.llm.local_static_cache, models_root=models)
        gw.batch([_hello(cfg.models.verifier)])  # load outside the clock
        t = time.perf_counter()
        table = verify_shard(items, gw, cfg.models.verifier, cfg.verify)
        dt = time.perf_counter() - t
        outs[mb] = [{k: v for k, v in r.items() if k not in ("latency_ms", "created_at")} for r in table.to_pylist()]
        return dt

    t_on, t_off = run(cfg.llm.local_prefix_cache_mb), run(0)
    backends.clear_backends()
    assert outs[0] == outs[cfg.llm.local_prefix_cache_mb], "prompt reuse changed a verification"
    return {"name": f"guided verification with vs without prompt reuse ({n} rows, {cfg.models.verifier}, same rows)",
            "ours": t_on / n, "baseline": t_off / n, "unit": "s/row", "ratio": t_off / t_on, "goal": ">= 3"}


BENCHES = {"awareness": bench_awareness, "awareness64": bench_awareness64, "rerun": bench_rerun, "sql": bench_sql, "digest": bench_digest, "env": bench_env, "isolation": bench_isolation, "budget": bench_budget,
           "verify": bench_verify, "localeval": bench_localeval, "localeval_json": bench_localeval_json, "guided": bench_guided,
           "dask": bench_dask, "ray": bench_ray}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of " + ", ".join(BENCHES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=str(REPO / ".progra" / "bench.json"), help="where to write the results")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="progra-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        prepare(str(work / "prefect-root"))  # this process's ephemeral Prefect server lives in the temp folder
        results = []
        stack.enter_context(in_process_settings())  # as the CLI runs flows
        for name in a.only.split(","):
            t = time.perf_counter()
            r = BENCHES[name.strip()](work, a.repeats)
            r["bench"], r["wall_s"] = name, round(time.perf_counter() - t, 1)
            results.append(r)
            print(f"[{name}] {r['ours']:.4g} vs {r['baseline']:.4g} {r['unit']}: ratio {r['ratio']:.3f} "
                  f"({r['wall_s']} s)", flush=True)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"make bench (medians of {a.repeats}; ratio as the issue defines it: ours / baseline for rates, time / time for times)")
    for col in ("benchmark", "ours", "baseline", "unit", "ratio", "goal"):
        table.add_column(col, justify="left" if col in ("benchmark", "unit", "goal") else "right")
    for r in results:
        table.add_row(r["name"], f"{r['ours']:.4g}", f"{r['baseline']:.4g}", r["unit"], f"{r['ratio']:.3f}", r["goal"])
    Console(width=160).print(table)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(results, indent=1))
    print(f"results: {a.json}")


if __name__ == "__main__":
    main()
