import pytest
from pydantic import ValidationError

from progra_core.config import PipelineConfig, load_config, profile_names


def test_profiles_load():
    assert {"embedded", "paper"} <= set(profile_names())
    emb = load_config("embedded")
    assert emb.models.generator == "local/smollm2" and emb.storage.root == "./.progra"
    paper = load_config("paper")
    assert paper.grpo.beta == 0.001 and paper.grpo.num_generations == 8 and paper.grpo.batch_size == 8
    assert paper.grpo.max_actions == 10 and paper.grpo.max_seq_len == 16384 and paper.grpo.max_steps == 200
    assert paper.synthesize.max_iterations == 4 and paper.synthesize.reviewers == 5
    assert paper.evaluate.trials == 3 and paper.models.generator == "openai/gpt-4o"
    assert 8 <= paper.sft.lora_r <= 16 and 8 <= paper.sft.lora_alpha <= 64 and 1e-7 <= paper.sft.learning_rate <= 1e-6


def test_overrides_and_validation(tmp_path):
    cfg = load_config("embedded", overrides=["ingest.limit=7", "ingest.bfcl_categories=[base, miss_func]", "llm.timeout_s=3.5"])
    assert cfg.ingest.limit == 7 and cfg.ingest.bfcl_categories == ["base", "miss_func"] and cfg.llm.timeout_s == 3.5
    with pytest.raises(ValidationError):
        load_config("embedded", overrides=["ingest.bfcl_categories=[nope]"])
    with pytest.raises(ValidationError):
        load_config("embedded", overrides=["ingest.no_such_field=1"])
    with pytest.raises(ValueError, match="key=value"):
        load_config("embedded", overrides=["ingest.limit"])
    with pytest.raises(ValueError, match="unknown profile"):
        load_config("nope")
    p = tmp_path / "c.yaml"
    p.write_text("ingest:\n  limit: 3\n")
    assert load_config(path=p).ingest.limit == 3


def test_scientific_notation_is_a_number_as_users_type_it():
    """docs/training.md's `--set sft.learning_rate=1e-4` was refused: YAML 1.1 reads 1e-4 as text."""
    cfg = load_config("embedded", overrides=["sft.learning_rate=1e-4", "grpo.learning_rate=5E-6", "grpo.beta=2.5e-2"])
    assert (cfg.sft.learning_rate, cfg.grpo.learning_rate, cfg.grpo.beta) == (1e-4, 5e-6, 2.5e-2)
    assert load_config("embedded", overrides=["models.policy=org/m-1e4x"]).models.policy == "org/m-1e4x"


def test_a_config_file_names_only_what_it_changes(tmp_path):
    """A file is layered over a profile: a partial one (docs/distributed.md's dispatch-only my.yaml)
    used to replace the profile, so the run fell back to the bare defaults (an LLM awareness
    generator over every segment, 200 SFT steps) instead of the embedded profile it meant."""
    embedded, paper = load_config("embedded"), load_config("paper")
    p = tmp_path / "my.yaml"
    p.write_text("dispatch:\n  task_runner: dask\n  max_workers: 2\n")
    cfg = load_config("embedded", p)
    assert cfg.dispatch.task_runner == "dask" and cfg.dispatch.max_workers == 2
    assert cfg.model_dump(exclude={"dispatch"}) == embedded.model_dump(exclude={"dispatch"})
    assert cfg.dispatch.mode == embedded.dispatch.mode  # a section is merged field by field
    assert load_config("paper", p).sft == paper.sft  # over --profile
    p.write_text("profile: paper\nsft:\n  max_steps: 7\n")  # over the profile the file names
    named = load_config("embedded", p, ["sft.learning_rate=0.5"])
    assert named.sft.max_steps == 7 and named.sft.learning_rate == 0.5 and named.grpo == paper.grpo


def test_section_is_plain_json():
    cfg = PipelineConfig()
    assert cfg.section("ingest")["bfcl_categories"] == ["base"]


def test_resolve_config_profile_form_and_overrides():
    from progra_core.config import load_config, resolve_config

    form = load_config("embedded", overrides=["verify.max_tokens=40"])
    # the UI form (a config) plus overrides on top
    cfg = resolve_config(form, None, ["method=wo_pag", "dispatch.mode=work_pool"])
    assert (cfg.verify.max_tokens, cfg.method, cfg.dispatch.mode) == (40, "wo_pag", "work_pool")
    assert form.method == "progra"  # the caller's object is left alone
    # profile + form merge by one rule: the profile, then the form's edits (fields that differ from
    # the embedded profile), then overrides. Before: choosing a profile silently dropped the edits
    paper = load_config("paper")
    merged = resolve_config(form, "paper", ["method=wo_pag"])
    assert merged.profile == "paper" and merged.verify.max_tokens == 40 and merged.method == "wo_pag"
    assert merged.model_dump(exclude={"verify", "method"}) == paper.model_dump(exclude={"verify", "method"})
    assert resolve_config(load_config("embedded"), "paper").model_dump() == paper.model_dump()  # an untouched form: the profile
    assert resolve_config(None, None).model_dump() == load_config("embedded").model_dump()
    assert resolve_config(form.model_dump(mode="json"), None).verify.max_tokens == 40  # JSON from a deployment
    import pytest

    with pytest.raises(ValueError, match="unknown profile"):
        resolve_config(None, "nope")


def test_task_runner_default_and_missing_extras():
    import importlib.util

    import pytest

    from flows.task_runners import task_runner
    from progra_core.config import load_config

    runner = task_runner(load_config("embedded", overrides=["dispatch.max_workers=2"]))
    assert type(runner).__name__ == "ThreadPoolTaskRunner" and runner._max_workers == 2
    for name, package in (("dask", "prefect_dask"), ("ray", "prefect_ray")):
        cfg = load_config("embedded", overrides=[f"dispatch.task_runner={name}"])
        if importlib.util.find_spec(package) is None:
            with pytest.raises(RuntimeError, match=f"pip install {package.replace('_', '-')}"):
                task_runner(cfg)


def test_the_verifier_is_the_policy_unless_named():
    from progra_core.config import load_config

    paper = load_config("paper")
    assert paper.models.verifier == "hosted_vllm/Salesforce/Llama-xLAM-2-8b-fc-r"  # the policy, as served
    other = load_config("paper", overrides=["models.policy=Salesforce/xLAM-2-3b-fc-r"])
    assert other.models.verifier == "hosted_vllm/Salesforce/xLAM-2-3b-fc-r"  # changing the policy changes LLM_ver
    assert load_config("embedded", overrides=["models.policy=local/tiny", "models.verifier=policy"]).models.verifier == "local/tiny"
    assert load_config("paper", overrides=["models.verifier=openai/gpt-4o"]).models.verifier == "openai/gpt-4o"
    with pytest.raises(ValueError, match="needs it served: set models.api_base.verifier"):
        load_config("paper", overrides=["models.api_base={}"])
    assert paper.ingest.tau2_domains == ["airline", "retail"] and paper.evaluate.limit is None
    assert paper.evaluate.categories == ["base", "miss_func", "miss_param"] and paper.evaluate.tau2_split == "test"


def test_pag_rl_continues_the_sft_adapter_so_its_lora_shape_is_inherited_or_refused(tmp_path):
    """The paper profile once set grpo.lora_alpha 64 over an SFT adapter of alpha 32: build_trainer
    loaded the adapter and silently kept 32. Now a conflicting value is refused when the config
    loads, an unset one inherits the adapter's shape, and from the base model the defaults apply."""
    paper = load_config("paper")
    assert paper.grpo.lora_shape((paper.sft.lora_r, paper.sft.lora_alpha)) == (16, 32)
    with pytest.raises(ValidationError, match="lora_alpha=64 but the SFT adapter it continues has lora_alpha=32"):
        load_config("paper", overrides=["grpo.lora_alpha=64"])
    # a method whose GRPO starts from the base model takes what it is given, defaults when unset
    assert load_config("paper", overrides=["grpo.lora_alpha=64", "method=mt_grpo"]).grpo.lora_shape() == (8, 64)
    assert load_config("embedded").grpo.lora_shape() == (8, 32)

    from peft import LoraConfig

    from progra_core.train.grpo import adapter_shape

    LoraConfig(r=4, lora_alpha=12).save_pretrained(str(tmp_path))
    assert adapter_shape(tmp_path) == (4, 12)
    with pytest.raises(ValueError, match="lora_r=8 but the SFT adapter it continues has lora_r=4"):
        paper.grpo.model_copy(update={"lora_r": 8}).lora_shape(adapter_shape(tmp_path))


def test_word_values_on_the_command_line_mean_the_word():
    """Symptom: ``--set grpo.use_vllm=off`` failed ("Input should be 'off', 'colocate' or 'server'"):
    YAML 1.1 read ``off`` as false. Boolean fields still take the words."""
    cfg = load_config("paper", overrides=["grpo.use_vllm=off", "sft.gradient_checkpointing=on", "grpo.gradient_checkpointing=off",
                                          "synthesize.enabled=false"])
    assert cfg.grpo.use_vllm == "off" and cfg.sft.gradient_checkpointing == "on" and cfg.grpo.gradient_checkpointing == "off"
    assert cfg.synthesize.enabled is False
    assert load_config("embedded", overrides=["evaluate.trials=3"]).evaluate.trials == 3  # numbers stay numbers


def test_ui_help_text_has_no_angle_bracket_placeholders():
    """The Prefect UI renders field help as markdown/HTML: ``<root>`` vanished ("default
    /catalog.duckdb"). Every config field's help and every deployed flow parameter's help use
    ``{root}``-style placeholders instead."""
    import re

    from pydantic import BaseModel

    from progra_core.config import PipelineConfig

    bad = []

    def walk(model, path):
        for name, f in model.model_fields.items():
            if re.search(r"<[^<>]+>", f.description or ""):
                bad.append(path + name)
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
                walk(f.annotation, f"{path}{name}.")

    walk(PipelineConfig, "")
    from prefect.utilities.callables import parameter_schema

    from flows.pipeline import data_refresh, full_pipeline
    from flows.stage_flow import stage

    for fl in (full_pipeline, data_refresh, stage):
        for name, prop in parameter_schema(fl.fn).model_dump()["properties"].items():
            if re.search(r"<[^<>]+>", prop.get("description") or ""):
                bad.append(f"{fl.name}:{name}")
    assert not bad, bad
