"""Training curves from TRL's log history: rows for the ``train_log`` dataset and a PNG per run.

matplotlib is imported inside the functions that use it: heavy, and only some callers need it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

__all__ = ["LABELS", "log_rows", "series", "plot_curves"]


def log_rows(model_id: str, stage: str, history: Sequence[dict]) -> list[dict]:
    """One row per (step, numeric metric) of TRL's ``state.log_history``."""
    rows = []
    for entry in history:
        step = int(entry.get("step", 0))
        for k, v in entry.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                rows.append({"model_id": model_id, "stage": stage, "step": step, "metric": k, "value": float(v)})
    return rows


def series(history: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(int(e["step"]), float(e[key])) for e in history if key in e and "step" in e]
    return [p[0] for p in pts], [p[1] for p in pts]


#: what a panel is called (TRL's log keys are not what a reader looks for)
LABELS = {"loss": "training loss", "eval_loss": "validation loss", "grad_norm": "gradient norm",
          "reward": "mean reward (return)", "kl": "KL to the reference", "rewards/reward_acc/mean": "SUCCESS (mean per rollout)",
          "rewards/reward_fmt/mean": "TEMPLATE (mean per rollout)", "rewards/reward_schema/mean": "SCHEMA (mean per rollout)"}


def plot_curves(history: Sequence[dict], keys: Sequence[str | tuple[str, ...]], path: str | Path, title: str = "") -> Path | None:
    """One panel per metric against the step; a tuple of keys shares a panel (training and
    validation loss). Steps are whole numbers on the axis. None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    groups = [k if isinstance(k, tuple) else (k,) for k in keys]
    panels = [[(k, *series(history, k)) for k in g] for g in groups]
    panels = [[line for line in p if line[1]] for p in panels]
    panels = [p for p in panels if p]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, lines in zip(axes[0], panels, strict=True):
        for k, xs, ys in lines:
            ax.plot(xs, ys, marker="o", label=LABELS.get(k, k))
        ax.set_title(" and ".join(LABELS.get(k, k) for k, _, _ in lines))
        if len(lines) > 1:
            ax.legend(fontsize="small")
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
