"""Process environment for Prefect and friends; call :func:`prepare` before importing prefect.

Prefect runs ephemeral by default with ``PREFECT_HOME`` inside the storage root (nothing is
written to ``~``) and analytics off (no internet here). An explicit ``PREFECT_API_URL`` (a real
server) or ``PREFECT_HOME`` from the user always wins.

Prefect is imported inside the functions that use it: heavy, and only some callers need it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def prepare(root: str = "./.progra") -> None:
    local = "://" not in root
    home = Path(root if local else ".progra-local").resolve() / "prefect"
    os.environ.setdefault("PREFECT_HOME", str(home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # the SDK's own telemetry (and its first-run notice on a terminal)
    # stage tasks persist nothing (tasks/runtime.STAGE_TASK); whatever else Prefect persists is JSON,
    # never a pickle a later run would load
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "false")
    os.environ.setdefault("PREFECT_RESULTS_DEFAULT_SERIALIZER", "json")
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(Path(os.environ["PREFECT_HOME"]) / "storage"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is flagged experimental in TRL 1.16
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


@contextmanager
def in_process_settings() -> Iterator[None]:
    """Settings for flows run in this process on an ephemeral server (no ``PREFECT_API_URL``):
    no flow-run heartbeats. They only let a server notice a crashed run, and an ephemeral server
    dies with the process; each flow run's heartbeat thread also costs up to a second at exit
    (it sleeps in one-second steps). Against a real server nothing changes."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
