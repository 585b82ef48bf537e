"""A Python class (examples/notebook/notebook.py) as the env of the whole pipeline, under a real
Prefect server: synthesis, SFT, a PAG-RL step and the held-out evaluation run in it
(tests/plugins/pipeline.py says what each stage must show)."""

from __future__ import annotations

import pytest

from tests.plugins import data
from tests.plugins.pipeline import run_and_check

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_a_python_class_env_goes_through_synthesis_sft_pag_rl_and_evaluation(tmp_path, tiny_llama):
    run_and_check("nb_py", f"{data.EXAMPLE / 'notebook.py'}:Notebook", tmp_path, tiny_llama)
