"""``progra``: run the pipeline, rerun a stage, list datasets, query them with SQL, export them, print Table 1."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="progra: progress-aware multi-turn function-calling pipeline (PROGRA / PARL-MT).",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()
err = Console(stderr=True)

ProfileOpt = Annotated[str, typer.Option("--profile", "-p", help="Config profile from configs/ (embedded, paper, ...).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="A YAML config file instead of a profile.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a field: --set ingest.limit=10 (repeatable).")]
RootOpt = Annotated[str | None, typer.Option("--root", help="Storage root (default: the profile's storage.root).")]


class Fmt(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def _config(profile: str, config: Path | None, overrides: list[str] | None, root: str | None = None):
    from progra_core.config import load_config

    try:
        cfg = load_config(profile, config, overrides)
    except Exception as e:
        err.print(f"[red]config error:[/red] {e}")
        raise typer.Exit(2) from None
    if root:
        cfg.storage.root = root
    return cfg


def _root(profile: str, root: str | None) -> str:
    return root or _config(profile, None, None).storage.root


def _cell(v) -> str:
    if isinstance(v, (dict, list)):
        s = json.dumps(v, default=str, ensure_ascii=False)
    else:
        s = "" if v is None else str(v)
    return s if len(s) <= 120 else s[:117] + "..."


def _print_table(tbl, title: str | None = None, max_rows: int = 50) -> None:
    t = Table(title=title, show_lines=False)
    for name in tbl.column_names:
        t.add_column(name, overflow="fold")
    for row in tbl.slice(0, max_rows).to_pylist():
        t.add_row(*(_cell(row[c]) for c in tbl.column_names))
    console.print(t)
    if tbl.num_rows > max_rows:
        console.print(f"[dim]({tbl.num_rows} rows, first {max_rows} shown; use --max-rows or --format)[/dim]")


_PROCESS = contextlib.ExitStack()  # held until the command's process exits


def _flow_env(cfg) -> None:
    from flows.env import in_process_settings, prepare

    prepare(cfg.storage.root)
    _PROCESS.enter_context(in_process_settings())


def _print_refs(refs: dict) -> None:
    t = Table(title="datasets of this run")
    for c in ("stage", "dataset_id", "rows", "rejects"):
        t.add_column(c, justify="right" if c in ("rows", "rejects") else "left")
    for r in refs.values():
        t.add_row(r.stage, r.dataset_id, str(r.rows), str(r.rejects))
    console.print(t)


@app.command()
def run(profile: ProfileOpt = "embedded", config: ConfigOpt = None, set_: SetOpt = None,
        through: Annotated[str, typer.Option(help="evaluate (default): the full pipeline (data, train, BFCL evaluation of "
                                                  "the base and the trained model); train: the data flow, then the method's "
                                                  "sft -> grpo; data: ingest [+ synthesize] -> segment -> awareness -> verify "
                                                  "-> augment -> sft_data; ingest: stop after ingest")] = "evaluate") -> None:
    """Run the pipeline on a profile (GPU stages where dispatch.mode says)."""
    cfg = _config(profile, config, set_)
    _flow_env(cfg)
    t0 = time.perf_counter()
    root_opt = f" --root {cfg.storage.root}" if cfg.storage.root != "./.progra" else ""
    if through == "ingest":
        from flows.ingest import ingest_flow

        ref = ingest_flow(cfg)
        console.print(f"[green]trajectories[/green] {ref.dataset_id}: {ref.rows} rows, {ref.rejects} rejects "
                      f"({time.perf_counter() - t0:.1f}s) -> {ref.path}")
        console.print(f'Query it: progra sql "select split, count(*) from trajectories group by split"{root_opt}')
        return
    if through not in ("data", "train", "evaluate"):
        err.print(f"[red]--through must be ingest, data, train or evaluate, not {through!r}[/red]")
        raise typer.Exit(2)
    from flows.runners import with_runner
    from storage import DatasetStore

    if through == "evaluate":
        from flows.pipeline import full_pipeline

        store = DatasetStore(cfg.storage.root)
        refs = {label: store.find(i) for label, i in full_pipeline(cfg).items()}
    else:
        from flows.data import data_flow

        refs = with_runner(data_flow, cfg)(cfg)
        if through == "train":
            from flows.train import train_flow

            refs |= train_flow(refs["sft_examples"].dataset_id, cfg)
    _show_data(refs, root_opt)
    if through in ("train", "evaluate"):
        _show_models(cfg, {k: refs[k] for k in ("sft", "grpo") if k in refs}, root_opt)
    if through == "evaluate":
        _show_evals(cfg, {k.removeprefix("eval "): r for k, r in refs.items() if k.startswith("eval ")}, root_opt)
    console.print(f"done in {time.perf_counter() - t0:.1f}s")


def _show_data(refs: dict, root_opt: str) -> None:
    _print_refs({k: r for k, r in refs.items() if r.stage not in ("models", "eval_results")})
    if "synthesized" in refs:
        st = refs["synthesized"].stats or {}
        console.print(f"synthesis: {st.get('accepted', 0)} of {st.get('attempts', 0)} attempts accepted; stop reasons "
                      f"{st.get('stop_reasons', {})} (progra sql \"select stop_reason, count(*) from synthesis_attempts "
                      f"group by stop_reason\")")
    v = refs["verified"]
    console.print(f"verified: {v.stats.get('equal', 0)} of {v.rows} awareness rows rebuilt a_fc (D_ver)")
    console.print(f'Query: progra sql "select * from funnel_latest order by position"{root_opt}')


def _show_evals(cfg, evals: dict, root_opt: str) -> None:
    from flows.evaluate import report_note

    _print_report([r.dataset_id for r in evals.values()], cfg.storage.root, title=TABLE_TITLE)
    console.print(report_note(cfg), highlight=False)
    for label, ref in evals.items():
        st = ref.stats or {}
        console.print(f"{label}: {st.get('passed')}/{st.get('runs')} runs passed, {st.get('seconds_per_run')} s per entry "
                      f"run ({st.get('seconds')} s) -> eval_results {ref.dataset_id}")
    console.print(f"Per turn: progra sql \"select model_ref, method, category, accuracy, turn_accuracy, "
                  f"mean_first_failed_turn from eval_summary\"{root_opt}")
    if cfg.evaluate.tau2_domains:
        console.print(f"tau2 failures: progra sql \"select category, entry_id, trial, reward, error_type from eval_results "
                      f"where benchmark = 'tau2'\"{root_opt}")


TABLE_TITLE = "Accuracy (%): BFCL multi-turn and tau2-bench"


def _print_report(eval_ids: list[str], root: str, title: str) -> None:
    from flows.evaluate import summary_rows
    from progra_core import report
    from storage import Catalog

    headers, body = report.table1(summary_rows(Catalog(root), eval_ids))
    _print_rows(headers, body, title)


def _print_rows(headers: list[str], body: list[list[str]], title: str) -> None:
    t = Table(title=title)
    for i, h in enumerate(headers):
        t.add_column(h, justify="left" if i < 2 else "right", overflow="fold")
    for row in body:
        t.add_row(*row)
    console.print(t)


def _show_models(cfg, models: dict, root_opt: str) -> None:
    if not models:
        console.print(f"method {cfg.method!r} trains nothing (evaluation only)")
        return
    t = Table(title=f"models of this run (method {cfg.method})")
    for c in ("stage", "model_id", "steps", "s/step", "metrics"):
        t.add_column(c)
    for stage, ref in models.items():
        st = ref.stats or {}
        keys = ("train_loss", "eval_loss_before", "eval_loss_after") if stage == "sft" else ("mean_reward_first", "mean_reward_last", "kl_reference")
        t.add_row(stage, ref.dataset_id, str(st.get("steps")), str(st.get("seconds_per_step")),
                  ", ".join(f"{k}={st.get(k)}" for k in keys))
    console.print(t)
    console.print(f"Adapters: progra sql \"select model_id, stage, adapter_path from models\"{root_opt}")
    if "grpo" in models:
        console.print(f'Reward curve: progra sql "select step, avg(total_reward) from rollouts group by step order by step"{root_opt}')


@app.command()
def stage(name: Annotated[str, typer.Argument(help="synthesize | segment | awareness | verify | augment | sft_data | sft | grpo | evaluate")],
          input: Annotated[str | None, typer.Option("--input", "-i", help="Input dataset id (see `progra datasets`); "
                                                     "synthesize and evaluate take none, sft an sft_examples id, grpo a trajectories id.")] = None,
          init: Annotated[str | None, typer.Option("--init", help="grpo: start from this registered adapter (a models id); "
                                                    "default: the base policy.")] = None,
          model: Annotated[list[str] | None, typer.Option("--model", "-m", help="evaluate: a model under test (repeatable): "
                                                           "base, reasoning, a models id, or a LiteLLM string; default: "
                                                           "evaluate.models, or --input.")] = None,
          profile: ProfileOpt = "embedded", config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Rerun one stage from a cached input dataset with the current config (+ --set overrides);
    the same flow as the stage-<name> deployment. An unchanged config returns the cached dataset."""
    cfg = _config(profile, config, set_)
    _flow_env(cfg)
    from flows.stages import STAGE_NAMES, input_stage
    from flows.stages import stage as stage_flow
    from storage import DatasetNotFound, DatasetStore

    if name not in STAGE_NAMES:
        err.print(f"[red]unknown stage {name!r}[/red]; choose from {', '.join(STAGE_NAMES)}")
        raise typer.Exit(2)
    models = None
    if name == "evaluate":
        models = list(model or ([input] if input else [m for m in cfg.evaluate.models if m != "trained"]))
        input = None
    elif input_stage(name) is not None and not input:
        err.print(f"[red]stage {name!r} needs --input[/red]: the id of a {input_stage(name)!r} dataset (progra datasets)")
        raise typer.Exit(2)
    t0 = time.perf_counter()
    try:
        ids = stage_flow(name, input, config=cfg, model_id=init, models=models)
    except (DatasetNotFound, ValueError) as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    store = DatasetStore(cfg.storage.root)
    refs = {label: store.find(i) for label, i in ids.items()}
    if not refs:
        console.print(f"method {cfg.method!r} has no {name} stage")
        return
    if name == "evaluate":
        _show_evals(cfg, refs, f" --root {cfg.storage.root}" if cfg.storage.root != "./.progra" else "")
    for label, ref in refs.items():
        st = ref.stats or {}
        extra = f", {st.get('steps')} steps, {st.get('seconds_per_step')} s/step" if ref.stage == "models" else ""
        console.print(f"[green]{label}[/green] {ref.dataset_id}: {ref.rows} rows, {ref.rejects} rejects{extra} "
                      f"({time.perf_counter() - t0:.1f}s)")


@app.command()
def report(runs: Annotated[list[str] | None, typer.Argument(help="Evaluation dataset ids or flow-run ids (prefixes work); "
                                                                "default: the latest evaluation of every model.")] = None,
           compare: Annotated[bool, typer.Option("--compare", help="Each argument is one run; put them side by side "
                                                                   "with the change in Overall.")] = False,
           markdown: Annotated[bool, typer.Option("--markdown", help="Print markdown instead of a table.")] = False,
           profile: ProfileOpt = "embedded", root: RootOpt = None) -> None:
    """The paper's Table 1 (BFCL Overall, Base, Miss F., Miss P.) from eval_summary."""
    from flows.evaluate import summary_rows
    from progra_core import report as rep
    from storage import Catalog

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
        headers, body = rep.compare([(r[:8], summary_rows(cat, ids_of(r))) for r in runs])
        title = TABLE_TITLE + ", runs side by side"
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
        headers, body = rep.table1(summary_rows(cat, ids))
        title = TABLE_TITLE
    if markdown:
        console.print(rep.to_markdown(headers, body, title), markup=False, highlight=False)
    else:
        _print_rows(headers, body, title)


@app.command()
def datasets(stage: Annotated[str | None, typer.Argument(help="Only this stage.")] = None,
             profile: ProfileOpt = "embedded", root: RootOpt = None) -> None:
    """List datasets: id, stage, rows, rejects, size, parents, created."""
    from storage import DatasetStore

    refs = DatasetStore(_root(profile, root)).list(stage)
    t = Table(title="datasets")
    for c in ("dataset_id", "stage", "rows", "rejects", "MB", "parents", "created"):
        t.add_column(c, justify="right" if c in ("rows", "rejects", "MB") else "left")
    for r in refs:
        t.add_row(r.dataset_id, r.stage, str(r.rows), str(r.rejects), f"{r.bytes / 1e6:.2f}", ",".join(r.parents),
                  r.created_at[:19])
    console.print(t)


@app.command()
def sql(query: Annotated[str, typer.Argument(help="SQL over the catalog views (trajectories, datasets, rejects, ...).")],
        format: Annotated[Fmt, typer.Option("--format", "-f")] = Fmt.table,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file instead of stdout.")] = None,
        max_rows: Annotated[int, typer.Option(help="Rows shown in table format.")] = 50,
        profile: ProfileOpt = "embedded", root: RootOpt = None) -> None:
    """Query every dataset with DuckDB."""
    import duckdb

    from storage import Catalog

    try:
        tbl = Catalog(_root(profile, root)).sql(query)
    except duckdb.Error as e:
        err.print(f"[red]SQL error:[/red] {e}")
        raise typer.Exit(1) from None
    if format is Fmt.table:
        _print_table(tbl, max_rows=max_rows)
        return
    if format is Fmt.parquet:
        if output is None:
            err.print("[red]--format parquet needs --output FILE[/red]")
            raise typer.Exit(2)
        import pyarrow.parquet as pq

        pq.write_table(tbl, output, compression="zstd")
        err.print(f"wrote {tbl.num_rows} rows to {output}")
        return
    if format is Fmt.csv:
        import pyarrow.csv as pcsv

        flat = tbl
        for i, f in enumerate(tbl.schema):  # CSV cannot hold nested values: JSON-encode them
            import pyarrow as pa

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
    import duckdb

    from storage import Catalog, DatasetStore
    from storage.export import FORMATS, export_table
    from storage.export import push_to_hub as push

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
    try:
        if refs:  # one dataset by id: its own files, filtered in DuckDB
            con = duckdb.connect()
            con.register("dataset", store.read(refs[0]))
            tbl = con.sql("select * from dataset" + (f" where {where}" if where else "")).to_arrow_table()
        else:
            tbl = Catalog(r).sql(f"select * from {view}" + (f" where {where}" if where else ""))
    except duckdb.Error as e:
        err.print(f"[red]cannot read {view!r}:[/red] {e}")
        raise typer.Exit(2) from None
    out = export_table(tbl, path, format)
    console.print(f"wrote {tbl.num_rows} rows of {refs[0].stage + ' ' + refs[0].dataset_id if refs else view} to {out} ({format})")
    if push_to_hub:
        try:
            console.print(f"pushed to {push(tbl, push_to_hub)}")
        except Exception as e:
            err.print(f"[red]push to the Hub failed:[/red] {e}")
            raise typer.Exit(1) from None


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
