"""Checkpoints of a training stage, and resuming from the newest complete one.

A crash or a Prefect retry of ``sft``/``grpo`` would otherwise start again at step 0. The
``transformers`` Trainer already saves what a resume needs every ``save_steps`` (the adapter,
optimizer, scheduler, every RNG and ``trainer_state.json`` with the step and the log history) and
restores it with ``train(resume_from_checkpoint=...)``, data position included (it skips the
batches already seen). This module adds what a stage needs around that:

* **complete or not at all**: a ``progra-complete.json`` marker is written into ``checkpoint-N``
  after everything else (the trainer's files and the stage's own state, e.g. PAG-RL's recorded
  rollouts); only marked checkpoints are resumed from, so a kill mid-save falls back to the one before;
* **a fixed place per fingerprint** under the storage root (``checkpoints/<stage>/<id>``), so the
  rerun of the same stage with the same inputs and config finds it and a different config never does;
* **remote roots** (``s3://``): the trainer writes to a local folder and each complete checkpoint
  is uploaded, marker last; a resume on another machine fetches the newest complete one first.

The trainer's torch files (``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``) are pickles
that ``transformers`` reads back only with torch's weights-only unpickler (tensors and plain
containers; no code runs); ``training_args.bin``, never read on resume, is deleted at save.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MARKER", "Checkpointing", "newest_complete", "checkpoint_callback"]

MARKER = "progra-complete.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
#: a pickled TrainingArguments: never read on resume, so never kept
_UNREAD = ("training_args.bin",)


def newest_complete(folder: str | os.PathLike) -> str | None:
    """The ``checkpoint-N`` under ``folder`` with the highest N that carries the marker."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    done = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and (p / MARKER).is_file()]
    return str(max(done)[1]) if done else None


def read_marker(checkpoint: str | os.PathLike) -> dict:
    return json.loads((Path(checkpoint) / MARKER).read_text())


@dataclass(frozen=True)
class Checkpointing:
    """Where a training call saves and resumes. Plain data, so it crosses into an ``accelerate
    launch`` job. ``local``: the folder the trainer writes ``checkpoint-N`` into; ``remote``: an
    fsspec URL mirrored from it (None on a local root, where ``local`` is already under the root)."""

    local: str
    save_steps: int
    save_total_limit: int
    remote: str | None = None

    def trainer_kwargs(self) -> dict:
        """The Trainer arguments that save a checkpoint every ``save_steps`` into ``local``."""
        return {"output_dir": self.local, "save_strategy": "steps", "save_steps": self.save_steps,
                "save_total_limit": self.save_total_limit, "save_only_model": False}

    def resume_from(self) -> str | None:
        """The newest complete checkpoint, fetched from ``remote`` first when it has a newer one."""
        if self.remote:
            self._fetch()
        return newest_complete(self.local)

    def _fs(self):
        import fsspec

        return fsspec.core.url_to_fs(self.remote, use_listings_cache=False)  # another process may have saved since

    def _fetch(self) -> None:
        fs, base = self._fs()
        if not fs.exists(base):
            return
        marked = [p for p in fs.ls(base, detail=False) if _NAME.match(posixpath.basename(p.rstrip("/")))
                  and fs.exists(posixpath.join(p, MARKER))]
        if not marked:
            return
        best = max(marked, key=lambda p: int(_NAME.match(posixpath.basename(p.rstrip("/"))).group(1)))
        name = posixpath.basename(best.rstrip("/"))
        have = newest_complete(self.local)
        if have and int(_NAME.match(Path(have).name).group(1)) >= int(_NAME.match(name).group(1)):
            return
        dest = Path(self.local) / name
        shutil.rmtree(dest, ignore_errors=True)
        src = best.rstrip("/")
        for f in fs.find(src):  # file by file: fsspec's recursive get nests folders differently per backend
            target = dest / posixpath.relpath(f, src)
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f, str(target))

    def upload(self, checkpoint: str) -> None:
        """Mirror one complete checkpoint to ``remote`` (marker last) and drop the remote ones the
        trainer has rotated away locally."""
        if not self.remote:
            return
        fs, base = self._fs()
        src = Path(checkpoint)
        files = sorted(p for p in src.rglob("*") if p.is_file())
        for p in [p for p in files if p.name != MARKER] + [src / MARKER]:
            fs.put_file(str(p), posixpath.join(base, src.name, p.relative_to(src).as_posix()))
        kept = {p.name for p in Path(self.local).iterdir() if _NAME.match(p.name)}
        for p in fs.ls(base, detail=False):
            name = posixpath.basename(p.rstrip("/"))
            if _NAME.match(name) and name not in kept:
                fs.rm(p, recursive=True)

    def clear(self) -> None:
        """Forget every checkpoint (after the stage has registered its model: they only serve a resume)."""
        shutil.rmtree(self.local, ignore_errors=True)
        if self.remote:
            fs, base = self._fs()
            if fs.exists(base):
                fs.rm(base, recursive=True)


def checkpoint_callback(checkpointing: Checkpointing, save_state: Callable[[str], dict] | None = None):
    """A TrainerCallback completing each checkpoint the trainer has just written: every process
    adds its own state (``save_state(folder)`` writes files and returns what the marker should
    record), then, once all have, the main process deletes the unread pickle, writes the marker
    and uploads. Collective like the save itself: every process calls ``on_save`` at the same step."""
    from accelerate import PartialState
    from transformers import TrainerCallback

    class _Complete(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            extra = save_state(folder) if save_state is not None else {}
            PartialState().wait_for_everyone()
            if state.is_world_process_zero:
                for name in _UNREAD:
                    Path(folder, name).unlink(missing_ok=True)
                Path(folder, MARKER).write_text(json.dumps({"step": state.global_step, **extra}))
                checkpointing.upload(folder)
            PartialState().wait_for_everyone()

    return _Complete()
