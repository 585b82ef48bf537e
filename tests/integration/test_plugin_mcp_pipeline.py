"""An MCP server (examples/notebook/notebook_mcp.py over stdio, one process per episode) as the env
of the whole pipeline, under a real Prefect server: synthesis, SFT, a PAG-RL step and the held-out
evaluation run in it (tests/plugins/pipeline.py says what each stage must show)."""

from __future__ import annotations

import sys

import pytest

from tests.plugins import data
from tests.plugins.pipeline import run_and_check

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_an_mcp_server_env_goes_through_synthesis_sft_pag_rl_and_evaluation(tmp_path, tiny_llama):
    spec = {"mcp": {"command": [sys.executable, str(data.EXAMPLE / "notebook_mcp.py")], "state_tool": "state"}}
    run_and_check("nb_mcp", spec, tmp_path, tiny_llama)
