"""Process environment for Prefect and friends; call :func:`prepare` before importing prefect.

Prefect runs ephemeral by default with ``PREFECT_HOME`` inside the storage root (nothing is
written to ``~``) and analytics off (no internet here). An explicit ``PREFECT_API_URL`` (a real
server) or ``PREFECT_HOME`` from the user always wins.
"""

from __future__ import annotations

import os
from pathlib import Path


def prepare(root: str = "./.progra") -> None:
    local = "://" not in root
    home = Path(root if local else ".progra-local").resolve() / "prefect"
    os.environ.setdefault("PREFECT_HOME", str(home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(Path(os.environ["PREFECT_HOME"]) / "storage"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is flagged experimental in TRL 1.16
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
