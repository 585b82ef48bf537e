"""What ``progra`` shows on the terminal: one progress bar per stage while a run goes, the summary
tables at the end, and nothing else but warnings. The full log (Prefect's flow and task lines,
TRL's per-step metrics, every warning) goes to ``<root>/logs/<command>-<time>.log`` and to the
Prefect server as usual."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from progra_core.evaluation import report as rep
from storage import CALLS, Catalog

__all__ = ["console", "err", "quiet_console_env", "live", "print_table", "print_refs", "print_rows", "show_data",
           "show_models", "show_evals"]

console = Console()
err = Console(stderr=True)


def quiet_console_env() -> None:
    """Before Prefect is imported: its console handler shows warnings and errors only (the run's
    INFO lines go to the log file and the Prefect server)."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")


class _Bars(logging.Handler):
    """Draws the ``progra.progress`` records (``tasks.artifacts.Progress``) as rich bars."""

    def __init__(self, progress: Progress):
        super().__init__(logging.INFO)
        self.progress, self.tasks = progress, {}

    def emit(self, record: logging.LogRecord) -> None:
        key, done, total, what = getattr(record, "progress", (None, 0, 0, ""))
        if key is None:
            return
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(f"{key.removesuffix('-progress')} ({what})", total=total)
        self.progress.update(self.tasks[key], completed=min(done, total), total=total)


def _log_dir(root: str) -> Path:
    local = "://" not in root
    return Path(root if local else ".progra-local") / "logs"


class _LogFilter(logging.Filter):
    """What the run's log file keeps: not the HTTP client's per-request lines (Prefect ships its
    logs over HTTP: 246 of 444 lines of a run were ``POST /api/logs/ 201``), and each record
    once (a record reaches the handler from its own logger and again from the root when it
    propagates)."""

    def __init__(self):
        super().__init__()
        self._last = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(("httpx", "httpcore")) and record.levelno < logging.WARNING:
            return False
        if record is self._last:
            return False
        self._last = record
        return True


@contextlib.contextmanager
def live(root: str, command: str) -> Iterator[Path]:
    """Progress bars on the terminal and the whole log in a file under the storage root, for the
    duration of one command; yields the log file's path."""
    path = _log_dir(root) / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setLevel(logging.INFO)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    file_handler.addFilter(_LogFilter())
    root_logger = logging.getLogger()
    root_logger.addHandler(file_handler)
    hf = logging.getLogger("transformers")  # it does not propagate: its warnings reached the terminal, not the file
    hf.addHandler(file_handler)
    if root_logger.level > logging.INFO or root_logger.level == logging.NOTSET:
        root_logger.setLevel(logging.INFO)
    logging.captureWarnings(True)  # warnings become log records: the file keeps them, the console shows them once
    progress_logger = logging.getLogger("progra.progress")
    bars = Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=False)
    handler = _Bars(bars)
    progress_logger.addHandler(handler)
    calls = Counter(CALLS)
    try:
        with bars:
            yield path
    finally:
        logging.getLogger("progra.storage").info("storage calls of this command: %s",
                                                 dict(sorted((CALLS - calls).items())) or "none")
        progress_logger.removeHandler(handler)
        root_logger.removeHandler(file_handler)
        hf.removeHandler(file_handler)
        file_handler.close()


def _cell(v) -> str:
    if isinstance(v, (dict, list)):
        s = json.dumps(v, default=str, ensure_ascii=False)
    else:
        s = "" if v is None else str(v)
    return s if len(s) <= 120 else s[:117] + "..."


def print_table(tbl, title: str | None = None, max_rows: int = 50) -> None:
    t = Table(title=title, show_lines=False)
    for name in tbl.column_names:
        t.add_column(name, overflow="fold")
    for row in tbl.slice(0, max_rows).to_pylist():
        t.add_row(*(_cell(row[c]) for c in tbl.column_names))
    console.print(t)
    if tbl.num_rows > max_rows:
        console.print(f"[dim]({tbl.num_rows} rows, first {max_rows} shown; use --max-rows or --format)[/dim]")


def print_refs(refs: dict) -> None:
    t = Table(title="datasets of this run")
    for c in ("stage", "dataset_id", "rows", "rejects"):
        t.add_column(c, justify="right" if c in ("rows", "rejects") else "left")
    for r in refs.values():
        t.add_row(r.stage, r.dataset_id, str(r.rows), str(r.rejects))
    console.print(t)


#: the metrics a model's row shows wherever models are listed (run output, run summary, measured.md)
HEADLINE_METRICS = {"sft": ("train_loss", "eval_loss_before", "eval_loss_after"),
                    "grpo": ("mean_reward_first", "mean_reward_last", "kl_reference")}


def print_rows(headers: list[str], body: list[list[str]], title: str) -> None:
    """A table that stays whole in an 80-column terminal or log: a cell breaks only at a space
    (an id folded over four lines cannot be copied, "81.2/5" misreads), an interval goes under
    its value, headers break at their spaces, and no vertical rules (Table 1 with the next-call
    columns is 77 wide)."""
    cells = [[c.replace(" [", "\n[") for c in row] for row in body]
    t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False)
    for i, h in enumerate(headers):
        spaced = any(" " in line for row in cells for line in row[i].split("\n"))
        t.add_column(h.replace(" ", "\n") if i else h, justify="left" if i < 2 else "right", no_wrap=not spaced,
                     overflow="fold")
    for row in cells:
        t.add_row(*row)
    console.print(t)


def show_data(refs: dict, root_opt: str) -> None:
    print_refs({k: r for k, r in refs.items() if r.stage not in ("models", "eval_results")})
    if "synthesized" in refs:
        st = refs["synthesized"].stats or {}
        console.print(f"synthesis: {st.get('accepted', 0)} of {st.get('attempts', 0)} attempts accepted; stop reasons "
                      f"{st.get('stop_reasons', {})} (progra sql \"select stop_reason, count(*) from synthesis_attempts "
                      f"group by stop_reason\")")
    v = refs["verified"]
    console.print(f"verified: {v.stats.get('equal', 0)} of {v.rows} awareness rows rebuilt a_fc (D_ver)")
    console.print(f'Query: progra sql "select * from funnel_latest order by position"{root_opt}')


def show_models(cfg, models: dict, root_opt: str) -> None:
    if not models:
        console.print(f"method {cfg.method!r} trains nothing (evaluation only)")
        return
    t = Table(title=f"models of this run (method {cfg.method})")
    for c in ("stage", "model_id", "steps", "s/step", "metrics"):
        t.add_column(c)
    for stage, ref in models.items():
        st = ref.stats or {}
        keys = HEADLINE_METRICS.get(stage, ())
        t.add_row(stage, ref.dataset_id, str(st.get("steps")), str(st.get("seconds_per_step")),
                  ", ".join(f"{k}={st.get(k)}" for k in keys))
    console.print(t)
    console.print(f"Adapters: progra sql \"select model_id, stage, adapter_path from models\"{root_opt}")
    if "grpo" in models:
        console.print(f'Reward curve: progra sql "select step, avg(total_reward) from rollouts group by step order by step"{root_opt}')


def show_evals(cfg, evals: dict, root_opt: str) -> None:
    summary = Catalog(cfg.storage.root).eval_summary([r.dataset_id for r in evals.values()])
    headers, body = rep.table1(summary)
    print_rows(headers, body, rep.table_title(summary))
    console.print(rep.report_note(cfg), highlight=False)
    for label, ref in evals.items():
        st = ref.stats or {}
        secs = st.get("seconds_by_benchmark") or {}
        parts = [f"{bench} {d['passed']}/{d['runs']} passed ({secs.get(bench, '?')} s)" for bench, d in (st.get("by_benchmark") or {}).items()]
        done = "; ".join(parts) or f"{st.get('passed')}/{st.get('runs')} passed"
        console.print(f"{label}: {done} ({st.get('seconds')} s) -> eval_results {ref.dataset_id}")
    console.print(f"Per turn: progra sql \"select model_ref, method, category, accuracy, turn_accuracy, "
                  f"mean_first_failed_turn from eval_summary\"{root_opt}")
    if cfg.evaluate.tau2_domains:
        console.print(f"tau2 failures: progra sql \"select category, entry_id, trial, reward, error_type from eval_results "
                      f"where benchmark = 'tau2'\"{root_opt}")
