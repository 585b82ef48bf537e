"""What a user sees while a run goes (#43): every progress line names its stage, a stage with
nothing to do says 0 of 0 (done) instead of staying at 0/1, and the run's log file keeps the
warnings the terminal shows but not the HTTP client's per-request lines."""

from __future__ import annotations

import logging

import pyarrow as pa

from progra_core.sharding import run_sharded
from tasks.artifacts import Progress


def test_progress_lines_name_their_stage_and_an_empty_stage_is_done(caplog):
    with caplog.at_level(logging.INFO, logger="progra"):
        p = Progress("augment-progress", 0)
        p(0, 0)
        q = Progress("verify-progress", 4)
        q(4)
    lines = [r.getMessage() for r in caplog.records if r.name == "progra"]
    assert "augment: 100% (0/0 items)" in lines, lines  # before: "progress 0% (0/1 items)", for ever
    assert "verify: 100% (4/4 items)" in lines


def test_a_sharded_stage_with_no_items_reports_that_it_is_done(tmp_path):
    from storage import DatasetStore, ShardIO

    seen = []
    table, stats = run_sharded([], "id", 4, lambda part: pa.table({"id": [p["id"] for p in part]}),
                               ShardIO(DatasetStore(tmp_path), "augmented", "empty0000000000a"), lambda d, t: seen.append((d, t)))
    assert table is None and seen == [(0, 0)] and stats["shards"] == 0


def test_the_run_log_keeps_library_warnings_once_and_drops_http_chatter(tmp_path):
    from flows.console import live

    with live(str(tmp_path), "probe") as path:
        logging.getLogger("httpx").info('HTTP Request: POST http://127.0.0.1:4200/api/logs/ "HTTP/1.1 201 Created"')
        logging.getLogger("httpx").warning("a real HTTP problem")
        hf = logging.getLogger("transformers.generation")
        old = logging.getLogger("transformers").propagate
        for propagate in (False, True):  # transformers' own setting (False), or a caller that re-enabled it
            logging.getLogger("transformers").propagate = propagate
            hf.warning("a deprecation warning (propagate=%s)", propagate)
        logging.getLogger("transformers").propagate = old
        logging.getLogger("progra").info("verify -> verified abc: 160 in")
    text = path.read_text()
    assert "POST http://127.0.0.1:4200/api/logs/" not in text and "a real HTTP problem" in text
    assert text.count("a deprecation warning (propagate=False)") == 1 and text.count("a deprecation warning (propagate=True)") == 1
    assert "verify -> verified abc" in text


def test_prefect_sdk_telemetry_is_off_so_no_usage_notice_is_printed(tmp_path):
    """``prepare`` turns the SDK's telemetry off (DO_NOT_TRACK), not only the server's analytics:
    on a terminal ``progra stage`` printed Prefect's anonymous-usage notice."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("DO_NOT_TRACK", "CI", "GITHUB_ACTIONS", "PREFECT_HOME")}
    code = (f"from flows.env import prepare; prepare({str(tmp_path)!r}); "
            "from prefect._internal.analytics.enabled import is_telemetry_enabled; print(is_telemetry_enabled())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr


def test_training_curves_show_validation_loss_whole_steps_and_the_paper_s_names(tmp_path, monkeypatch):
    """The SFT panel has the validation loss beside the training loss; step ticks are whole
    numbers (the GRPO plot of 3 steps showed 0.5, 1.5, ...); SUCCESS is called SUCCESS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from progra_core.train.curves import plot_curves

    kept = []
    monkeypatch.setattr(plt, "close", lambda fig: kept.append(fig))
    history = [{"step": 0, "eval_loss": 1.2}, *({"step": s, "loss": 1.0 / s, "grad_norm": 0.5} for s in range(1, 5)),
               {"step": 4, "eval_loss": 0.3}]
    assert plot_curves(history, [("loss", "eval_loss"), "grad_norm"], tmp_path / "sft.png").is_file()
    grpo = [{"step": s, "reward": 0.1 * s, "kl": 0.0, "rewards/reward_acc/mean": 0.25} for s in (1, 2, 3)]
    assert plot_curves(grpo, ["reward", "kl", "rewards/reward_acc/mean"], tmp_path / "grpo.png").is_file()
    sft, rl = kept
    assert sft.axes[0].get_title() == "training loss and validation loss" and len(sft.axes[0].get_lines()) == 2
    assert [a.get_title() for a in rl.axes] == ["mean reward (return)", "KL to the reference", "SUCCESS (mean per rollout)"]
    for fig in kept:
        fig.canvas.draw()
        for ax in fig.axes:
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
