"""What a stage shows while and after it runs: a progress artifact (and, through the
``progra.progress`` logger, the CLI's progress bars), markdown artifacts that say what they are,
and images. Artifacts are a courtesy: publishing one never fails a stage."""

from __future__ import annotations

import base64
import logging
import re

from prefect import get_run_logger
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)

__all__ = ["artifact_key", "Progress", "funnel_markdown", "publish_markdown", "publish_image", "PROGRESS_LOGGER", "log_train_step"]

#: Every progress update is a record here with ``record.progress = (key, done, total, what)``:
#: whoever shows progress in this process (``progra run``'s bars) listens; nobody else hears it.
PROGRESS_LOGGER = logging.getLogger("progra.progress")
PROGRESS_LOGGER.propagate = False
PROGRESS_LOGGER.setLevel(logging.INFO)


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from names like ``plain_sft``: an
    invalid key made Prefect refuse the artifact, silently here."""
    return "-".join(p for p in (re.sub(r"[^a-z0-9]+", "-", part.lower()).strip("-") for part in parts) if p)


def _logger():
    try:
        return get_run_logger()
    except Exception:  # outside a flow or task run
        return logging.getLogger("progra")


class Progress:
    """One stage's progress: a Prefect progress artifact whose description carries the current
    count, log lines every ``every`` percent, and the CLI's bar when one is listening."""

    def __init__(self, key: str, total: int = 0, every: int = 10, what: str = "items"):
        self.key, self.total, self.every, self.what = key, max(total, 0), every, what
        self.stage = key.removesuffix("-progress")
        self._last = -every
        try:
            self.id = create_progress_artifact(progress=0.0, key=artifact_key(key), description=self._describe(0))
        except Exception:  # outside a run (a plain function call): logging only
            self.id = None
        self._emit(0)

    def _emit(self, done: int) -> None:
        if PROGRESS_LOGGER.handlers:
            PROGRESS_LOGGER.info("%s %d/%d", self.key, done, self.total, extra={"progress": (self.key, done, self.total, self.what)})

    def _describe(self, done: int) -> str:
        return f"{self.key}: {min(done, self.total)}/{self.total} {self.what}"

    def __call__(self, done: int, total: int | None = None) -> None:
        """``done`` of ``total`` (a stage with nothing to do reports 0 of 0: done, 100 %)."""
        if total is not None:
            self.total = max(total, 0)
        self._emit(done)
        pct = 100.0 * min(done, self.total) / self.total if self.total else 100.0
        if pct - self._last >= self.every or done >= self.total:
            self._last = pct
            if self.id is not None:
                try:
                    update_progress_artifact(self.id, progress=pct, description=self._describe(done))
                except Exception:
                    pass
            _logger().info("%s: %.0f%% (%d/%d %s)", self.stage, pct, min(done, self.total), self.total, self.what)


def log_train_step(logs: dict) -> None:
    """One of TRL's per-step log dicts, as a line of the stage's log (Prefect and the log file)."""
    step = logs.get("step")
    body = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items() if k != "step")
    _logger().info("step %s: %s", step, body)


def cost_text(u: dict) -> str:
    """A role's cost: the priced calls' sum, and how many live calls had no price (then the
    true cost is higher: "unknown", never "free")."""
    cost, unpriced = u.get("cost_usd", 0.0), int(u.get("unpriced_calls", 0))
    if unpriced and not cost:
        return f"unknown ({unpriced} calls unpriced)"
    return f"{cost:.4f}" + (f" + unknown ({unpriced} calls unpriced)" if unpriced else "")


def funnel_markdown(title: str, rows: list[tuple[str, int, int, int]], rejects: dict[str, int] | None = None,
                    usage: dict | None = None, links: dict[str, str] | None = None) -> str:
    """A markdown funnel: (stage, rows in, rows out, rejects) per line, rejects by reason, LLM usage."""
    md = [f"# {title}", "", "| stage | in | out | rejects |", "|---|---:|---:|---:|"]
    md += [f"| {s} | {i} | {o} | {r} |" for s, i, o, r in rows]
    if rejects:
        md += ["", "## Rejects by reason", "", "| reason | count |", "|---|---:|"]
        md += [f"| {k} | {v} |" for k, v in sorted(rejects.items(), key=lambda kv: -kv[1])]
    if usage:
        md += ["", "## LLM usage by role", "", "| role | calls | cached | errors | retries | prompt tok | completion tok | "
               "mean latency ms | cost USD |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for role, u in usage.items():
            md.append(f"| {role} | {u['calls']:.0f} | {u['cached']:.0f} | {u['errors']:.0f} | {u['retries']:.0f} | "
                      f"{u['prompt_tokens']:.0f} | {u['completion_tokens']:.0f} | {u['mean_latency_ms']:.0f} | {cost_text(u)} |")
    if links:
        md += ["", "## Datasets", ""] + [f"- **{k}**: `{v}`" for k, v in links.items()]
    return "\n".join(md)


def publish_markdown(key: str, markdown: str, description: str) -> None:
    """A markdown artifact; ``description`` is what the UI lists it as (say what it is)."""
    try:
        create_markdown_artifact(markdown=markdown, key=key, description=description)
    except Exception as e:
        _logger().warning("could not publish artifact %s: %s", key, e)


def publish_image(key: str, png_path, description: str) -> None:
    """The PNG as a Prefect image artifact (a data URL: the server needs no file access)."""
    try:
        data = base64.b64encode(open(png_path, "rb").read()).decode()
        create_image_artifact(image_url=f"data:image/png;base64,{data}", key=key, description=description)
    except Exception as e:
        _logger().warning("could not publish image artifact %s: %s", key, e)
