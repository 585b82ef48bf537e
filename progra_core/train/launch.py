"""Training on more than one device: a stage's train call (``train_sft``, ``train_grpo``) run as
one ``accelerate launch`` job, which the calling stage starts, watches and collects.

* ``launch.num_processes == 1``: the call runs here, as before.
* ``> 1``: the call's arguments go to a job folder (pickled: our own data, written and read by
  this code only, never model output), ``accelerate launch -m progra_core.train.launch <folder>``
  starts the processes (torchrun underneath; gloo on CPU, NCCL on GPUs), and every process runs
  the same call under ``transformers.Trainer``'s data parallelism. Rank 0 alone saves the adapter
  to ``out_dir`` and the call's return value to the folder, and reports each step on its stdout
  as ``@@progra`` JSON lines, which the parent hands to the stage's ``progress`` / ``log``.
* A job that exits non-zero, runs past ``launch.timeout_s`` or leaves no result raises
  :class:`LaunchFailed` with the end of its output; the process group dies with the caller.

Why not Prefect tasks per rank: the ranks must start together and rendezvous; torchrun owns that,
and the stage stays one flow run with one adapter to register.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from progra_core.config import LaunchConfig

__all__ = ["LaunchFailed", "EVENT", "ACCELERATE_CONFIGS", "train", "release_memory", "command", "main"]

EVENT = "@@progra "
#: the strategies' accelerate configs (shipped with the profiles)
ACCELERATE_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
_STRATEGY_FILES = {"fsdp": "fsdp.yaml", "deepspeed": "deepspeed_zero3.yaml"}
#: a Python exception's last traceback line (``KeyError: 'x'``), optionally rank-prefixed by torchrun
_RAISED = re.compile(r"^(\[rank\d+\]:\s*)?([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)):\s")


class LaunchFailed(RuntimeError):
    """The multi-process training job did not finish with a result."""


def train(target: str, launch: LaunchConfig, *, out_dir: str | Path, progress: Callable[[int, int], None] | None = None,
          log: Callable[[dict], None] | None = None, info: Callable[[str], None] | None = None, **kwargs):
    """``target(**kwargs, out_dir=, progress=, log=)`` (``"module:function"``) in this process, or
    as a ``launch.num_processes``-process job; returns what rank 0's call returned."""
    if launch.num_processes == 1:
        from progra_core.llm.backends import drop_idle_backends

        drop_idle_backends()  # inference models kept warm for a next shard: the job needs the memory
        release_memory()
        try:
            return _resolve(target)(**kwargs, out_dir=out_dir, progress=progress, log=log)
        finally:
            release_memory()
    _check(launch)
    with tempfile.TemporaryDirectory(prefix="progra-launch-") as job:
        job = Path(job)
        with open(job / "job.pkl", "wb") as f:
            pickle.dump({"target": target, "kwargs": kwargs, "out_dir": str(out_dir)}, f)
        cmd = command(launch, job)
        (info or (lambda m: None))(f"launching {launch.num_processes} training processes ({launch.strategy}): {' '.join(cmd)}")
        _watch(cmd, launch, progress, log, info)
        if not (job / "result.pkl").exists():
            raise LaunchFailed(f"the {launch.num_processes}-process job exited 0 but rank 0 left no result")
        with open(job / "result.pkl", "rb") as f:
            return pickle.load(f)


def release_memory() -> None:
    """Hand a finished in-process job's freed memory back to the OS: collect reference cycles, then
    ``malloc_trim`` (glibc). Pages a stage freed stay resident while live chunks sit between them,
    and the next stage allocates on top: the embedded ``make run`` peaked at 22.1 GB once its stages
    were tasks of one flow (21.2 GB with this; 12.8 GB once idle inference backends are dropped
    before each job as well). A no-op without glibc."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


def command(launch: LaunchConfig, job: str | Path) -> list[str]:
    """The ``accelerate launch`` command line of a job folder."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(launch.num_processes),
           "--num_machines", "1", "--main_process_ip", "127.0.0.1", "--main_process_port", str(launch.main_process_port),
           "--dynamo_backend", "no"]
    config = launch.config_file or (str(ACCELERATE_CONFIGS / _STRATEGY_FILES[launch.strategy])
                                    if launch.strategy in _STRATEGY_FILES else None)
    # DDP needs no file: --multi_gpu is torchrun's data parallelism (on CPU each rank uses gloo)
    cmd += ["--config_file", config] if config else ["--multi_gpu", "--mixed_precision", "no"]
    return cmd + ["-m", __name__, str(job)]


def _check(launch: LaunchConfig) -> None:
    """Refuse what cannot work before any process starts."""
    import importlib.util

    import torch

    if launch.config_file and not Path(launch.config_file).is_file():
        raise ValueError(f"launch.config_file {launch.config_file!r} does not exist")
    if launch.config_file:
        return
    if launch.strategy in ("fsdp", "deepspeed") and not torch.cuda.is_available():
        raise ValueError(f"launch.strategy={launch.strategy} shards the model over GPUs and none is visible: "
                         "use launch.strategy=ddp on CPU")
    if launch.strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise ValueError("launch.strategy=deepspeed needs DeepSpeed: pip install deepspeed on the GPU machine, or use fsdp")
    if torch.cuda.is_available() and torch.cuda.device_count() < launch.num_processes:
        raise ValueError(f"launch.num_processes={launch.num_processes} but this machine has {torch.cuda.device_count()} "
                         "GPU(s): one process per GPU")


def _env(launch: LaunchConfig) -> dict[str, str]:
    import torch

    env = dict(os.environ)
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in env:  # share the cores, do not oversubscribe
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // launch.num_processes))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _watch(cmd: list[str], launch: LaunchConfig, progress, log, info) -> None:
    """Run the job to its end, forwarding rank 0's events; kill its whole process group on
    timeout, failure or when the caller is interrupted (a cancelled Prefect run)."""
    tail: deque[str] = deque(maxlen=40)
    raised: list[str] = []  # the ranks' own exceptions: torchrun's summary can push them out of the tail
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=_env(launch), start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:  # a thread only reads; callbacks run in the caller's thread (its Prefect context)
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + launch.timeout_s
    try:
        while True:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                line = ""
            if line is None:
                break
            if line.startswith(EVENT):
                event = json.loads(line[len(EVENT):])
                if "progress" in event and progress is not None:
                    progress(*event["progress"])
                elif "log" in event and log is not None:
                    log(event["log"])
            elif line:
                tail.append(line.rstrip())
                if _RAISED.match(line) and len(raised) < 8 and line.rstrip() not in raised:
                    raised.append(line.rstrip())
            if time.monotonic() > deadline:
                raise LaunchFailed(f"the training job ran past launch.timeout_s={launch.timeout_s}s and was killed")
        rc = proc.wait()
    finally:  # the launcher and any rank it left behind
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    if rc != 0:
        first = ("; raised: " + " | ".join(raised)) if raised else ""
        raise LaunchFailed(f"the {launch.num_processes}-process training job exited {rc}{first}; its last output:\n"
                           + "\n".join(tail))
    if info and tail:
        info("training job finished; its last output: " + " | ".join(list(tail)[-3:]))


def _resolve(target: str) -> Callable:
    """``module:function``, importable in every rank (a module, so it pickles by name)."""
    module, _, name = target.partition(":")
    if not (module and name):
        raise ValueError(f"a training entry point is 'module:function', not {target!r}")
    return getattr(importlib.import_module(module), name)


def _emit(event: dict) -> None:
    print(EVENT + json.dumps(event, default=str), flush=True)


def main(argv: list[str] | None = None) -> None:
    """One rank of a job: run the call; rank 0 reports steps and writes the result."""
    job = Path((argv or sys.argv[1:])[0])
    with open(job / "job.pkl", "rb") as f:
        spec = pickle.load(f)
    rank = int(os.environ.get("RANK", "0"))
    zero = rank == 0
    result = _resolve(spec["target"])(
        **spec["kwargs"], out_dir=spec["out_dir"],
        progress=(lambda step, total: _emit({"progress": [step, total]})) if zero else None,
        log=(lambda logs: _emit({"log": logs})) if zero else None)
    if zero:
        tmp = job / "result.pkl.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(result, f)
        tmp.rename(job / "result.pkl")


if __name__ == "__main__":
    main()
