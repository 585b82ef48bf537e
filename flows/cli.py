"""``progra``: run the pipeline, list datasets, query them with SQL."""

from __future__ import annotations

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


def _flow_env(cfg) -> None:
    from flows.env import prepare

    prepare(cfg.storage.root)


def _print_refs(refs: dict) -> None:
    t = Table(title="datasets of this run")
    for c in ("stage", "dataset_id", "rows", "rejects"):
        t.add_column(c, justify="right" if c in ("rows", "rejects") else "left")
    for r in refs.values():
        t.add_row(r.stage, r.dataset_id, str(r.rows), str(r.rejects))
    console.print(t)


@app.command()
def run(profile: ProfileOpt = "embedded", config: ConfigOpt = None, set_: SetOpt = None,
        through: Annotated[str, typer.Option(help="train (default): the data flow, then the method's sft -> grpo; "
                                                  "data: ingest [+ synthesize] -> segment -> awareness -> verify -> augment -> sft_data; "
                                                  "ingest: stop after ingest")] = "train") -> None:
    """Run the pipeline on a profile."""
    cfg = _config(profile, config, set_)
    _flow_env(cfg)
    t0 = time.perf_counter()
    if through == "ingest":
        from flows.ingest import ingest_flow

        ref = ingest_flow(cfg)
        console.print(f"[green]trajectories[/green] {ref.dataset_id}: {ref.rows} rows, {ref.rejects} rejects "
                      f"({time.perf_counter() - t0:.1f}s) -> {ref.path}")
        console.print('Query it: progra sql "select split, count(*) from trajectories group by split"'
                      + (f" --root {cfg.storage.root}" if cfg.storage.root != "./.progra" else ""))
        return
    if through not in ("data", "train"):
        err.print(f"[red]--through must be ingest, data or train, not {through!r}[/red]")
        raise typer.Exit(2)
    from flows.data import data_flow

    refs = data_flow(cfg)
    _print_refs(refs)
    if "synthesized" in refs:
        st = refs["synthesized"].stats or {}
        console.print(f"synthesis: {st.get('accepted', 0)} of {st.get('attempts', 0)} attempts accepted; stop reasons "
                      f"{st.get('stop_reasons', {})} (progra sql \"select stop_reason, count(*) from synthesis_attempts "
                      f"group by stop_reason\")")
    v = refs["verified"]
    console.print(f"verified: {v.stats.get('equal', 0)} of {v.rows} awareness rows rebuilt a_fc (D_ver); "
                  f"{time.perf_counter() - t0:.1f}s")
    root_opt = f" --root {cfg.storage.root}" if cfg.storage.root != "./.progra" else ""
    console.print(f'Query: progra sql "select * from funnel_latest order by position"{root_opt}')
    if through == "train":
        _train(cfg, refs["sft_examples"], t0, root_opt)


def _train(cfg, examples, t0: float, root_opt: str) -> None:
    from flows.train import train_flow

    models = train_flow(examples.dataset_id, cfg)
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
    console.print(f"trained in {time.perf_counter() - t0:.1f}s total. Adapters: progra sql \"select model_id, stage, adapter_path "
                  f"from models\"{root_opt}")
    if "grpo" in models:
        console.print(f'Reward curve: progra sql "select step, avg(total_reward) from rollouts group by step order by step"{root_opt}')


@app.command()
def stage(name: Annotated[str, typer.Argument(help="synthesize | segment | awareness | verify | augment | sft_data | sft | grpo")],
          input: Annotated[str | None, typer.Option("--input", "-i", help="Input dataset id (see `progra datasets`); "
                                                     "synthesize takes none, sft an sft_examples id, grpo a trajectories id.")] = None,
          init: Annotated[str | None, typer.Option("--init", help="grpo: start from this registered adapter (a models id); "
                                                    "default: the base policy.")] = None,
          profile: ProfileOpt = "embedded", config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Rerun one stage from a cached input dataset with the current config (+ --set overrides)."""
    cfg = _config(profile, config, set_)
    _flow_env(cfg)
    from flows.stages import STAGES, stage_flow
    from storage import DatasetNotFound

    if name in ("sft", "grpo"):
        if not input:
            err.print(f"[red]stage {name!r} needs --input[/red]: the id of a "
                      f"{'sft_examples' if name == 'sft' else 'trajectories'!r} dataset (progra datasets)")
            raise typer.Exit(2)
        from flows import train

        t0 = time.perf_counter()
        try:
            ref = train.sft(input, cfg) if name == "sft" else train.grpo(input, init, cfg)
        except (DatasetNotFound, ValueError) as e:
            err.print(f"[red]{e}[/red]")
            raise typer.Exit(2) from None
        if ref is None:
            console.print(f"method {cfg.method!r} has no {name} stage")
            return
        console.print(f"[green]{name}[/green] model {ref.dataset_id} ({time.perf_counter() - t0:.1f}s): "
                      f"{ref.stats.get('steps')} steps, {ref.stats.get('seconds_per_step')} s/step")
        return

    if name not in STAGES:
        err.print(f"[red]unknown stage {name!r}[/red]; choose from {', '.join(STAGES)}")
        raise typer.Exit(2)
    if STAGES[name][2] is not None and not input:
        err.print(f"[red]stage {name!r} needs --input[/red]: the id of a {STAGES[name][2]!r} dataset (progra datasets)")
        raise typer.Exit(2)
    t0 = time.perf_counter()
    try:
        ref = stage_flow(name, input, cfg)
    except (DatasetNotFound, ValueError) as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    console.print(f"[green]{ref.stage}[/green] {ref.dataset_id}: {ref.rows} rows, {ref.rejects} rejects "
                  f"({time.perf_counter() - t0:.1f}s)")


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


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
