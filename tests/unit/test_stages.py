"""The stage registry (progra_core/stages.py) is the one declaration of every stage: the CLI, the
catalog, the flows, the Prefect tasks and deployments/prefect.yaml must agree with it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from progra_core import stages
from progra_core.config import PipelineConfig, load_config
from progra_core.schemas import DATASETS

REPO = Path(__file__).resolve().parents[2]


def test_every_declaration_is_complete():
    assert len(set(stages.STAGE_NAMES)) == len(stages.STAGES)
    for st in stages.STAGES:
        assert st.output in DATASETS and all(d in DATASETS for d in (*st.inputs, *st.reads, *st.also_writes)), st.name
        assert st.help and st.code_version and st.section in PipelineConfig.model_fields, st.name
        if st.kind == "table":
            assert st.run is not None and st.items is None, st.name
        elif st.kind == "sharded":
            assert None not in (st.items, st.process, st.finish, st.shard_size) and st.id_key and st.role, st.name
        else:
            assert st.run is None and st.process is None, st.name
        assert not st.reads or st.inputs, f"{st.name}: ancestors are found from the first input"
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        stages.get("nope")


def test_the_cli_offers_exactly_the_registered_stages():
    from flows.cli import StageName, app

    assert [s.value for s in StageName] == list(stages.STAGE_NAMES)
    help_text = CliRunner().invoke(app, ["stage", "--help"], terminal_width=400).output
    for st in stages.STAGES:
        assert st.name in help_text
    out = CliRunner().invoke(app, ["stage", "nope"])
    assert out.exit_code == 2 and "nope" in out.output


def test_prefect_yaml_has_one_deployment_per_stage_on_its_pool():
    doc = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in doc["deployments"] if d["name"].startswith("stage-")}
    assert sorted(deps) == sorted(f"stage-{n}" for n in stages.STAGE_NAMES)
    for st in stages.STAGES:
        d = deps[f"stage-{st.name}"]
        assert d["entrypoint"] == "flows/stage_flow.py:stage" and d["parameters"] == {"name": st.name}
        assert d["work_pool"]["name"] == ("progra-gpu" if st.gpu_pool else "progra-cpu"), st.name
        # each stage deployment describes its own stage (all 11 shared one generic text before)
        assert d["description"].startswith(f"Rerun stage {st.name} (") and st.help in d["description"], st.name
    assert len({d["description"] for d in deps.values()}) == len(deps)


def test_the_catalog_has_a_view_for_every_output_before_any_run(tmp_path):
    from storage import Catalog

    cat = Catalog(tmp_path)
    for st in stages.STAGES:
        for d in (st.output, *st.also_writes):  # queryable (and empty) on a fresh root
            assert cat.sql(f"select count(*) from {d}").column(0)[0].as_py() == 0, d
            assert cat.sql(f"select * from {d}").schema.names[:-1] == DATASETS[d].names, d


def _stage_calls(path: Path) -> set[str]:
    """Stage names passed as the second argument of ``stage`` / ``dispatch_stage`` calls: the one
    way the flows start a stage."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            fn = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if fn in ("stage", "dispatch_stage") and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                found.add(node.args[1].value)
            assert fn not in ("run_data_stage", "synthesize", "sft", "grpo"), f"{path.name} starts a stage another way: {fn}"
    return found


def test_the_pipeline_flows_run_every_registered_stage():
    used = set()
    for f in ("data.py", "train.py", "pipeline.py"):
        used |= _stage_calls(REPO / "flows" / f)
    assert used == set(stages.STAGE_NAMES)
    from flows.stage_flow import run_stage
    from tasks.stage_tasks import STAGE_RUNS, TASKS

    assert set(TASKS) == {s.name for s in stages.STAGES if s.kind != "custom"}
    assert set(STAGE_RUNS) == set(stages.STAGE_NAMES)  # one run contract: every stage, custom ones included
    cfg = load_config("embedded")
    for st in stages.STAGES:  # every stage is reachable through the one stage flow (inputs are checked first)
        if st.inputs:
            with pytest.raises(ValueError, match=f"stage {st.name!r} reads"):
                run_stage(cfg, st.name, [])
        assert TASKS.get(st.name) is None or TASKS[st.name].name == st.name


@pytest.mark.parametrize("st", [s for s in stages.STAGES], ids=lambda s: s.name)
def test_a_fingerprint_moves_with_its_own_section_only(st):
    from progra_core.evaluation.bfcl import Subject
    from tasks.stage_tasks import stage_fingerprint

    base = load_config("embedded")
    context = {"subject": Subject("base", "base", "local/smollm2")} if st.name == "evaluate" else {}
    before = stage_fingerprint(st.name, base, ["p"], **context)
    for other in ("segment", "verify", "sft_data", "dispatch"):
        if other == st.section:
            continue
        cfg = base.model_copy(deep=True)
        section = getattr(cfg, other)
        field = next(k for k, v in type(section).model_fields.items() if v.annotation in (bool, int, float))
        setattr(section, field, not getattr(section, field) if isinstance(getattr(section, field), bool)
                else getattr(section, field) + 1)
        if st.name in ("sft",) and other == "sft_data" and field == "validation_percent":
            continue  # the SFT split depends on it, on purpose
        assert stage_fingerprint(st.name, cfg, ["p"], **context) == before, (st.name, other, field)
    assert stage_fingerprint(st.name, base, ["q"], **context) != before
