"""Training curves from TRL's log history: rows for the ``train_log`` dataset and a PNG per run.

matplotlib is imported inside the functions that use it: heavy, and only some callers need it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

__all__ = ["log_rows", "series", "plot_curves"]


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


def plot_curves(history: Sequence[dict], keys: Sequence[str], path: str | Path, title: str = "") -> Path | None:
    """One panel per metric (e.g. ``reward`` and ``kl``) against the step; None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, *series(history, k)) for k in keys]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (k, xs, ys) in zip(axes[0], panels, strict=True):
        ax.plot(xs, ys, marker="o")
        ax.set_title(k)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
