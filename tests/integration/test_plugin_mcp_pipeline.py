"""An MCP server (examples/notebook/notebook_mcp.py, streamable HTTP, one process for the whole run)
as the env of the whole pipeline, under a real Prefect server: synthesis, SFT, a PAG-RL step and the
held-out evaluation run in it (tests/plugins/pipeline.py says what each stage must show). Each
episode is reset through the server's reset tool and keeps its own state by the episode id progra
sends in every request's _meta, with twin episodes open side by side. The stdio transport (one
process per episode) is tested in tests/unit/test_plugin_envs.py and is the example's config."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.conftest import free_port
from tests.plugins import data
from tests.plugins.pipeline import run_and_check

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_an_mcp_server_env_goes_through_synthesis_sft_pag_rl_and_evaluation(tmp_path, tiny_llama):
    port = free_port()
    with open(tmp_path / "server.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(data.EXAMPLE / "notebook_mcp.py"), "--http", str(port)],
                                stdout=log, stderr=log, start_new_session=True)
        try:
            spec = {"mcp": {"url": f"http://127.0.0.1:{port}/mcp", "reset_tool": "reset", "state_tool": "state"}}
            deadline = time.monotonic() + 60
            while "Uvicorn running" not in (tmp_path / "server.log").read_text() and time.monotonic() < deadline:
                time.sleep(0.2)
            run_and_check("nb_mcp", spec, tmp_path, tiny_llama)
        finally:
            proc.kill()
            proc.wait()
