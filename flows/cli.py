"""``progra``: run the pipeline, rerun a stage, list datasets, query them with SQL, export them, print Table 1.

The flow modules (they import Prefect) are imported inside the commands that run flows, after
:func:`_flow_env`: Prefect reads its settings (home, server, logging) from the environment when
it is first imported, and those depend on the storage root of the config the command was given.
Everything else is imported here.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import sys
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import duckdb
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import typer
from rich.markup import escape
from rich.table import Table

from flows.console import (
    console,
    err,
    live,
    print_rows,
    print_table,
    quiet_console_env,
    show_data,
    show_evals,
    show_models,
)
from flows.env import in_process_settings, prepare
from progra_core import stages
from progra_core.config import load_config
from progra_core.evaluation import report as rep
from progra_core.schemas import DATASETS
from storage import Catalog, DatasetNotFound, DatasetStore, SQLRefused
from storage.cards import dataset_card
from storage.catalog import check_filter
from storage.export import FORMATS, export_table
from storage.export import push_to_hub as push

app = typer.Typer(help="progra: progress-aware multi-turn function-calling pipeline (PROGRA / PARL-MT).",
                  no_args_is_help=True, pretty_exceptions_enable=False)

ProfileOpt = Annotated[str, typer.Option("--profile", "-p", help="Config profile from configs/ (embedded, paper, ...).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="A YAML config file, layered over --profile (or the profile it names): it names only what it changes.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a field: --set ingest.limit=10 (repeatable).")]
RootOpt = Annotated[str | None, typer.Option("--root", help="Storage root (default: the profile's storage.root).")]


class Fmt(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def _config(profile: str, config: Path | None, overrides: list[str] | None, root: str | None = None):
    try:
        cfg = load_config(profile, config, overrides)
    except Exception as e:
        err.print(f"[red]config error:[/red] {e}")
        raise typer.Exit(2) from None
    if root:
        cfg.storage.root = root
    return cfg


def _root(profile: str, root: str | None) -> str:
    """The storage root a reading command looks at; a local one that does not exist is an error
    naming it (the default ``./.progra`` is relative to the working directory: run from another
    folder, it silently showed nothing)."""
    r = root or _config(profile, None, None).storage.root
    _must_exist(r)
    return r


def _must_exist(root: str) -> None:
    if "://" not in root and not (Path(root) / "datasets").is_dir():
        err.print(f"[red]no storage root at {Path(root).resolve()}[/red] (nothing has run there): run `make run` or "
                  "`progra run` first, or pass --root (the default, ./.progra, is relative to the working directory)")
        raise typer.Exit(2)


@contextlib.contextmanager
def _flow_env(cfg, command: str) -> Iterator[Path]:
    """Prefect's environment for this config (before Prefect is first imported), then progress
    bars and the log file for the command; yields the log file's path."""
    quiet_console_env()
    prepare(cfg.storage.root)
    with in_process_settings(), live(cfg.storage.root, command) as log:
        yield log


@app.command()
def run(profile: ProfileOpt = "embedded", config: ConfigOpt = None, set_: SetOpt = None,
        through: Annotated[str, typer.Option(help="evaluate (default): the full pipeline (data, train, BFCL evaluation of "
                                                  "the base and the trained model); train: the data flow, then the method's "
                                                  "sft -> grpo; data: ingest [+ synthesize] -> segment -> awareness -> verify "
                                                  "-> augment -> sft_data; ingest: stop after ingest")] = "evaluate",
        root: RootOpt = None) -> None:
    """Run the pipeline on a profile (GPU stages where dispatch.mode says)."""
    cfg = _config(profile, config, set_, root)
    if through not in ("ingest", "data", "train", "evaluate"):
        err.print(f"[red]--through must be ingest, data, train or evaluate, not {through!r}[/red]")
        raise typer.Exit(2)
    t0 = time.perf_counter()
    root_opt = f" --root {cfg.storage.root}" if cfg.storage.root != "./.progra" else ""
    with _flow_env(cfg, "run") as log:  # the bars stop before the summary is printed
        refs = _run(cfg, through)
    if through == "ingest":
        ref = refs["trajectories"]
        console.print(f"[green]trajectories[/green] {ref.dataset_id}: {ref.rows} rows, {ref.rejects} rejects "
                      f"({time.perf_counter() - t0:.1f}s) -> {ref.path}")
        console.print(f'Query it: progra sql "select split, count(*) from trajectories group by split"{root_opt}')
        return
    show_data(refs, root_opt)
    if through in ("train", "evaluate"):
        show_models(cfg, {k: refs[k] for k in ("sft", "grpo") if k in refs}, root_opt)
    if through == "evaluate":
        show_evals(cfg, {k.removeprefix("eval "): r for k, r in refs.items() if k.startswith("eval ")}, root_opt)
    console.print(f"done in {time.perf_counter() - t0:.1f}s; the whole log: {log}")


def _run(cfg, through: str) -> dict:
    """The flows ``through`` names, in this process; ``{label: DatasetRef}``."""
    if through == "ingest":
        from flows.ingest import ingest_flow

        return {"trajectories": ingest_flow(cfg)}
    if through == "evaluate":
        from flows.pipeline import full_pipeline

        store = DatasetStore(cfg.storage.root)
        return {label: store.find(i) for label, i in full_pipeline(cfg).items()}
    from flows.data import data_flow
    from flows.task_runners import with_runner

    refs = with_runner(data_flow, cfg)(cfg)
    if through == "train":
        from flows.train import train_flow

        refs |= train_flow(refs["sft_examples"], cfg)
    return refs


StageName = StrEnum("StageName", {n: n for n in stages.STAGE_NAMES})
_STAGE_HELP = "; ".join(f"{s.name} ({' + '.join(s.inputs) or 'no input'})" for s in stages.STAGES)


@app.command()
def stage(name: Annotated[StageName, typer.Argument(help=f"The stage to rerun, with the input it reads: {_STAGE_HELP}.")],
          input: Annotated[list[str] | None, typer.Option("--input", "-i", help="Input dataset id (see `progra datasets`), "
                                                           "repeatable: mix takes the ingested trajectories and the "
                                                           "synthesized ids; evaluate takes a model here (or --model).")] = None,
          init: Annotated[str | None, typer.Option("--init", help="grpo: start from this registered adapter (a models id); "
                                                    "default: the base policy.")] = None,
          model: Annotated[list[str] | None, typer.Option("--model", "-m", help="evaluate: a model under test (repeatable): "
                                                           "base, reasoning, a models id, or a LiteLLM string; default: "
                                                           "evaluate.models, or --input.")] = None,
          profile: ProfileOpt = "embedded", config: ConfigOpt = None, set_: SetOpt = None, root: RootOpt = None) -> None:
    """Rerun one stage from cached input datasets with the current config (+ --set overrides);
    the same flow as the stage-<name> deployment. An unchanged config returns the cached dataset."""
    name = name.value
    cfg = _config(profile, config, set_, root)
    if stages.get(name).inputs:  # it reads datasets: a root that does not exist has none
        _must_exist(cfg.storage.root)
    st = stages.get(name)
    models = None
    if name == "evaluate":
        models = list(model or input or [m for m in cfg.evaluate.models if m != "trained"])
        input = None
    elif (why := st.input_error(list(input or []))) is not None:
        err.print(f"[red]{why}[/red]")
        raise typer.Exit(2)
    t0 = time.perf_counter()
    with _flow_env(cfg, f"stage-{name}"):  # the bars stop before the result is printed
        from flows.stage_flow import stage as stage_flow

        try:
            ids = stage_flow(name, list(input or []), config=cfg, model_id=init, models=models)
        except (DatasetNotFound, ValueError) as e:
            err.print(f"[red]{e}[/red]")
            raise typer.Exit(2) from None
    store = DatasetStore(cfg.storage.root)
    refs = {label: store.find(i) for label, i in ids.items()}
    if not refs:
        console.print(f"method {cfg.method!r} has no {name} stage")
        return
    if name == "evaluate":
        show_evals(cfg, refs, f" --root {cfg.storage.root}" if cfg.storage.root != "./.progra" else "")
    for label, ref in refs.items():
        st = ref.stats or {}
        extra = f", {st.get('steps')} steps, {st.get('seconds_per_step')} s/step" if ref.stage == "models" else ""
        console.print(f"[green]{label}[/green] {ref.dataset_id}: {ref.rows} rows, {ref.rejects} rejects{extra} "
                      f"({time.perf_counter() - t0:.1f}s)")


@app.command()
def ablate(method: Annotated[list[str] | None, typer.Option("--method", "-m", help="A method to train and evaluate "
                                                           "(repeatable); default: base, sft, wo_pag_rl, mt_grpo, progra, "
                                                           "progra_tarl.")] = None,
           profile: ProfileOpt = "embedded", config: ConfigOpt = None, set_: SetOpt = None, root: RootOpt = None) -> None:
    """The paper's Table 2 in small: every method on one data flow with the same budget, one table."""
    cfg = _config(profile, config, set_, root)
    t0 = time.perf_counter()
    with _flow_env(cfg, "ablate") as log:
        from flows.ablate import ablate as ablate_flow

        try:
            out = ablate_flow(config=cfg, methods=method)
        except ValueError as e:
            err.print(f"[red]{e}[/red]")
            raise typer.Exit(2) from None
    print_rows(out["headers"], out["rows"], "Mini Table 2: every method on one data flow, one budget")
    console.print(rep.report_note(cfg), highlight=False)
    console.print(f"done in {time.perf_counter() - t0:.1f}s; the whole log: {log}")


@app.command()
def report(runs: Annotated[list[str] | None, typer.Argument(help="Evaluation dataset ids or flow-run ids (prefixes work); "
                                                                "default: the latest evaluation of every model.")] = None,
           compare: Annotated[bool, typer.Option("--compare", help="Each argument is one run; put them side by side "
                                                                   "with the change in Overall.")] = False,
           markdown: Annotated[bool, typer.Option("--markdown", help="Print markdown instead of a table.")] = False,
           profile: ProfileOpt = "embedded", root: RootOpt = None) -> None:
    """The paper's Table 1 (BFCL Overall, Base, Miss F., Miss P.) from eval_summary."""
    cat = Catalog(_root(profile, root))
    evals = cat.sql("select dataset_id, flow_run_id, config from datasets where stage = 'eval_results' "
                    "order by created_at").to_pylist()

    def ids_of(arg: str) -> list[str]:
        found = [e["dataset_id"] for e in evals if e["dataset_id"].startswith(arg) or (e["flow_run_id"] or "").startswith(arg)]
        if not found:
            err.print(f"[red]no evaluation dataset or flow run matches {arg!r}[/red] (progra datasets eval_results)")
            raise typer.Exit(2)
        return found

    if not evals:
        err.print("[red]no evaluations yet[/red]: progra run, or progra stage evaluate -m base")
        raise typer.Exit(1)
    if compare:
        if not runs or len(runs) < 2:
            err.print("[red]--compare needs two or more runs[/red]")
            raise typer.Exit(2)
        summaries = [(r[:8], cat.eval_summary(ids_of(r))) for r in runs]
        headers, body = rep.compare(summaries)
        title = rep.table_title([x for _, s in summaries for x in s]) + ", runs side by side"
        _print_table(headers, body, title, markdown)
        for headers, body, title in _paired_tables(cat, (runs[0], ids_of(runs[0])), (runs[-1], ids_of(runs[-1]))):
            _print_table(headers, body, title, markdown)
        return
    else:
        if runs:
            ids = [i for r in runs for i in ids_of(r)]
        else:  # the newest evaluation per model/method/prompt
            latest: dict[str, str] = {}
            for e in evals:
                c = json.loads(e["config"])
                latest[json.dumps([c.get("subject", {}).get("model_ref"), c.get("subject", {}).get("method"),
                                   c.get("evaluate", {}).get("prompt")])] = e["dataset_id"]
            ids = list(latest.values())
        summary = cat.eval_summary(ids)
        headers, body = rep.table1(summary)
        title = rep.table_title(summary)
    _print_table(headers, body, title, markdown)


def _print_table(headers: list[str], body: list[list[str]], title: str, markdown: bool) -> None:
    if markdown:
        console.print(rep.to_markdown(headers, body, title), markup=False, highlight=False)
    else:
        print_rows(headers, body, title)


def _paired_tables(cat: Catalog, first: tuple[str, list[str]], last: tuple[str, list[str]]):
    """The first and the last run with paired bootstrap intervals: one table when each run holds
    one model, else one per model both runs evaluated."""
    def rows(ids: list[str]) -> dict[tuple[str, str], list[dict]]:
        marks = ", ".join("?" for _ in ids)
        out: dict[tuple[str, str], list[dict]] = {}
        for r in cat.sql(f"select model_ref, method, benchmark, category, entry_id, trial, passed, turn_passed from eval_results "
                         f"where dataset_id in ({marks})", ids).to_pylist():
            out.setdefault((r["model_ref"], r["method"]), []).append(r)
        return out

    a, b = rows(first[1]), rows(last[1])
    if len(a) == 1 and len(b) == 1:
        pairs = [((first[0][:8], last[0][:8]), next(iter(a.values())), next(iter(b.values())), "")]
    else:
        pairs = [((first[0][:8], last[0][:8]), a[k], b[k], f", {k[0][:12]}/{k[1]}") for k in a if k in b]
    for labels, ra, rb, who in pairs:
        headers, body = rep.paired(ra, rb, labels)
        yield headers, body, f"Paired bootstrap, 95 % intervals over entries{who} (accuracy %)"


@app.command()
def envs(name: Annotated[str | None, typer.Argument(help="An env to open: its tools and scenario.")] = None,
         profile: ProfileOpt = "embedded", config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """The environments trajectories may name (built in, your config's envs, installed plugins), or
    one env's tools: check that your class or MCP server loads before a run."""
    import json as _json

    from rich.markup import escape

    from progra_core.envs import registry
    from progra_core.envs.factory import make_env

    cfg = _config(profile, config, set_)
    if name is None:
        print_rows(["env", "from", "what a row gives it"],
                   [[n, "your config" if n in cfg.envs else "built in" if n in ("bfcl", "tau2") else "installed",
                     escape(registry.get(n).help)]
                    for n in registry.names()], "Environments")
        return
    try:
        env = make_env(name, [], None)
        tools, scenario = env.tools(), env.scenario()
    except Exception as e:  # noqa: BLE001 - a plugin that does not load says why
        err.print(f"[red]env {name}:[/red] {e}")
        raise typer.Exit(2) from None
    print_rows(["tool", "parameters", "description"],
               [[t["name"], _json.dumps((t.get("parameters") or {}).get("properties") or {})[:80],
                 (t.get("description") or "")[:80]] for t in tools], f"{name}: {len(tools)} tools")
    console.print(f"scenario: {scenario[:300]}", markup=False, highlight=False)


@app.command()
def plan(profile: ProfileOpt = "embedded", config: ConfigOpt = None, set_: SetOpt = None,
         gpu_memory: Annotated[float, typer.Option("--gpu-memory", help="GiB of the GPU the stages will run on.")] = 80.0,
         model: Annotated[str | None, typer.Option(help="The policy (default: models.policy): a folder with config.json "
                                                        "or a hub id with a shipped layout.")] = None,
         root: RootOpt = None) -> None:
    """Estimate each GPU stage's peak memory on a GPU of --gpu-memory GiB (bf16, checkpointing as on CUDA)."""
    from progra_core.train import memory

    cfg = _config(profile, config, set_, root)
    try:
        arch = memory.load_arch(model or cfg.models.policy, Path(cfg.storage.root) / "models")
    except ValueError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
    ests = memory.plan(cfg, arch, gpu_memory)
    keys = sorted(dict.fromkeys(k for e in ests for k in e.parts), key=lambda k: k == "overhead")
    body = [[k, *(f"{e.gib()[k]:.1f}" if k in e.parts else "–" for e in ests)] for k in keys]
    body.append(["total", *(f"{e.total / memory.GIB:.1f}" for e in ests)])
    body.append([f"fits {gpu_memory:g} GiB", *("yes" if e.total <= gpu_memory * memory.GIB else "NO" for e in ests)])
    print_rows(["GiB", *(e.stage for e in ests)], body,
               f"Peak memory per stage: {arch.name} ({arch.params / 1e9:.2f}B parameters)")
    for e in ests:
        console.print(f"{e.stage}: {e.notes}", markup=False, highlight=False)
    if any(e.total > gpu_memory * memory.GIB for e in ests):
        raise typer.Exit(1)


@app.command()
def datasets(stage: Annotated[str | None, typer.Argument(help="Only this stage.")] = None,
             profile: ProfileOpt = "embedded", root: RootOpt = None) -> None:
    """List datasets: id, stage, rows, rejects, size, parents, created; a dataset whose manifest or
    bytes are not what was written is marked corrupt (no view serves it) and named below the table."""
    store = DatasetStore(_root(profile, root))
    if stage is not None and stage not in DATASETS and stage not in store.stages():
        close = difflib.get_close_matches(stage, sorted(set(DATASETS) | set(store.stages())), n=1)
        err.print(f"[red]no dataset kind {stage!r}[/red]" + (f"; did you mean {close[0]!r}?" if close else "")
                  + f" Kinds: {', '.join(sorted(DATASETS))}")
        raise typer.Exit(2)
    refs = store.list(stage)
    bad = {r.dataset_id for r in refs if not store.intact(r)}
    t = Table(title="datasets")
    for c in ("dataset_id", "stage", "rows", "rejects", "MB", "parents", "created", *(["state"] if bad else [])):
        t.add_column(c, justify="right" if c in ("rows", "rejects", "MB") else "left")
    for r in refs:
        t.add_row(r.dataset_id, r.stage, str(r.rows), str(r.rejects), f"{r.bytes / 1e6:.2f}", ",".join(r.parents),
                  r.created_at[:19], *(["[red]corrupt[/red]" if r.dataset_id in bad else "ok"] if bad else []))
    console.print(t)
    for msg in store.corrupt:
        err.print(f"[red]corrupt:[/red] {escape(msg)}", highlight=False)


@app.command()
def sql(query: Annotated[str, typer.Argument(help="SQL over the catalog views (trajectories, datasets, rejects, ...).")],
        format: Annotated[Fmt, typer.Option("--format", "-f")] = Fmt.table,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file instead of stdout.")] = None,
        max_rows: Annotated[int, typer.Option(help="Rows shown in table format.")] = 50,
        profile: ProfileOpt = "embedded", root: RootOpt = None) -> None:
    """Query every dataset with DuckDB."""
    try:
        tbl = Catalog(_root(profile, root)).user_sql(query)
    except SQLRefused as e:
        err.print(f"[red]refused:[/red] {e}")
        raise typer.Exit(2) from None
    except duckdb.Error as e:
        err.print(f"[red]SQL error:[/red] {e}")
        raise typer.Exit(1) from None
    if format is Fmt.table:
        print_table(tbl, max_rows=max_rows)
        return
    if format is Fmt.parquet:
        if output is None:
            err.print("[red]--format parquet needs --output FILE[/red]")
            raise typer.Exit(2)
        pq.write_table(tbl, output, compression="zstd")
        err.print(f"wrote {tbl.num_rows} rows to {output}")
        return
    if format is Fmt.csv:
        flat = tbl
        for i, f in enumerate(tbl.schema):  # CSV cannot hold nested values: JSON-encode them
            if pa.types.is_nested(f.type):
                flat = flat.set_column(i, f.name, pa.array([json.dumps(v, default=str) for v in tbl.column(i).to_pylist()]))
        sink = str(output) if output else sys.stdout.buffer
        pcsv.write_csv(flat, sink)
        return
    text = json.dumps(tbl.to_pylist(), default=str, ensure_ascii=False, indent=1)
    if output:
        output.write_text(text)
    else:
        sys.stdout.write(text + "\n")


@app.command()
def export(view: Annotated[str, typer.Argument(help="A catalog view (awareness, verified_latest, eval_results, ...) or a dataset id "
                                                    "(prefixes work).")],
           path: Annotated[Path, typer.Argument(help="Output file (parquet, jsonl) or folder (hf).")],
           format: Annotated[str, typer.Option("--format", "-f", help="jsonl | hf (a datasets.save_to_disk folder) | parquet")] = "parquet",
           where: Annotated[str | None, typer.Option(help="SQL filter, e.g. \"equal\" or \"split = 'train'\".")] = None,
           push_to_hub: Annotated[str | None, typer.Option("--push-to-hub", help="Also push to this Hub dataset repo "
                                                                                  "(token from $HF_TOKEN; needs the network).")] = None,
           profile: ProfileOpt = "embedded", root: RootOpt = None) -> None:
    """Export a dataset or view for other tools (TRL, datasets, pandas, jq)."""
    if format not in FORMATS:
        err.print(f"[red]--format must be one of {', '.join(FORMATS)}[/red]")
        raise typer.Exit(2)
    r = _root(profile, root)
    store = DatasetStore(r)
    refs = [x for x in store.list() if x.dataset_id.startswith(view)] if len(view) >= 6 else []
    if len(refs) > 1:
        err.print(f"[red]{view!r} matches {len(refs)} datasets[/red]: {', '.join(x.dataset_id for x in refs)}")
        raise typer.Exit(2)
    if not refs and not view.replace("_", "").isalnum():
        err.print(f"[red]{view!r} is neither a view nor a dataset id[/red] (progra datasets; progra sql \"show tables\")")
        raise typer.Exit(2)
    if where is not None:
        try:
            check_filter(where)
        except SQLRefused as e:
            err.print(f"[red]--where takes one filter expression:[/red] {escape(str(e))}")
            raise typer.Exit(2) from None
    filt = f" where ({where})" if where else ""
    try:
        if refs:  # one dataset by id: its own files, filtered in DuckDB
            tbl = Catalog(r).user_sql("select * from dataset" + filt, table=store.read(refs[0]))
        else:
            tbl = Catalog(r).user_sql(f"select * from {view}" + filt)
    except SQLRefused as e:
        err.print(f"[red]--where refused:[/red] {e}")
        raise typer.Exit(2) from None
    except duckdb.Error as e:
        err.print(f"[red]cannot read {view!r}:[/red] {e}")
        raise typer.Exit(2) from None
    card = None
    if format == "hf" or push_to_hub:
        sources = refs or _view_refs(store, view)
        card = dataset_card(store, sources, tbl, title=f"progra {refs[0].stage + ' ' + refs[0].dataset_id if refs else view}",
                            descriptions={s.output: s.help for s in stages.STAGES}, where=where)
    out = export_table(tbl, path, format, card=card if format == "hf" else None)
    console.print(f"wrote {tbl.num_rows} rows of {refs[0].stage + ' ' + refs[0].dataset_id if refs else view} to {out} ({format})")
    if push_to_hub:
        try:
            console.print(f"pushed to {push(tbl, push_to_hub, card=card)}")
        except Exception as e:
            err.print(f"[red]push to the Hub failed:[/red] {e}")
            raise typer.Exit(1) from None


@app.command("export-model")
def export_model(model: Annotated[str, typer.Argument(help="A models id (see `progra sql \"select * from models\"`; prefixes work).")],
                 path: Annotated[Path, typer.Argument(help="A new folder for the merged model.")],
                 profile: ProfileOpt = "embedded", root: RootOpt = None) -> None:
    """Merge a trained adapter into its base and write a plain HF model folder with a model card."""
    from progra_core.train.merge import merge_adapter
    from storage.cards import model_card
    from tasks.models import model_path

    r = _root(profile, root)
    cat, store = Catalog(r), DatasetStore(r)
    rows = [x for x in cat.sql("select * from models").to_pylist() if x["model_id"].startswith(model)] if len(model) >= 6 else []
    if len(rows) != 1:
        err.print(f"[red]{model!r} matches {len(rows)} models[/red] (ids: progra sql \"select model_id, method from models\")")
        raise typer.Exit(2)
    row = rows[0]
    cfg = load_config(profile)
    base = model_path(cfg, r, row["base"])
    try:
        out = merge_adapter(base, store.local_model(row["adapter_path"]), path)
    except FileExistsError as e:
        err.print(f"[red]{escape(str(e))}[/red]")
        raise typer.Exit(2) from None
    evals = cat.sql("select * from eval_summary where model_ref = ? order by eval_id, benchmark, category", [row["model_id"]]).to_pylist()
    (out / "README.md").write_text(model_card(store, row, evals, base_folder=base), encoding="utf-8")
    console.print(f"wrote {row['stage']} model {row['model_id']} ({row['method']}) merged into {row['base']} to {out}")


def _view_refs(store: DatasetStore, view: str) -> list:
    """The datasets a catalog view reads: every dataset of its stage, or the newest for ``_latest``."""
    stage, latest = (view[: -len("_latest")], True) if view.endswith("_latest") else (view, False)
    refs = [r for r in store.list(stage) if store.intact(r)] if stage in store.stages() else []
    return refs[-1:] if latest else refs


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
