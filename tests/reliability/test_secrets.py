"""Secrets: API keys come from an env var or a Prefect Secret block and are really sent (the
llm-katan servers check them), yet no Parquet file, manifest, catalog, response cache, Prefect
result, log line, flow-run parameter or console line holds them, not even an endpoint's error
message that quotes the key it was sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reliability.conftest import echo_config, run_awareness

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.server]

KEY_ENV = "sk-progra-fake-env-5f1d2c3b4a"
KEY_SECRET = "sk-progra-fake-secret-9e8d7c6b5a"
N = 24


def _prefect_records() -> list[str]:
    """Every flow run's parameters and every log line the Prefect server holds."""
    from prefect.client.orchestration import get_client

    out: list[str] = []
    with get_client(sync_client=True) as client:
        out += [json.dumps(r.parameters, default=str) + str(r.state.message if r.state else "") for r in client.read_flow_runs(limit=200)]
        offset = 0
        while page := client.read_logs(limit=200, offset=offset):
            out += [log.message for log in page]
            offset += len(page)
    return out


def _files_holding(folder: Path, secrets: list[bytes]) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and any(s in p.read_bytes() for s in secrets)]


def test_keys_are_used_but_never_stored_or_logged(tmp_path, katan_echo, echo_segments, monkeypatch, capfd):
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    from flows.stage_flow import stage
    from storage import Catalog

    gen = katan_echo("--validate-keys", "--api-keys", f"openai={KEY_ENV}")
    ver = katan_echo("--validate-keys", "--api-keys", f"openai={KEY_SECRET}")
    other = katan_echo("--validate-keys", "--api-keys", "openai=sk-that-server-only")
    monkeypatch.setenv("PROGRA_TEST_GENERATOR_KEY", KEY_ENV)
    monkeypatch.setenv("PROGRA_KEY_ENVS", "PROGRA_TEST_GENERATOR_KEY@127.0.0.1, secret:progra-test-verifier-key@127.0.0.1")
    Secret(value=KEY_SECRET).save("progra-test-verifier-key", overwrite=True)
    root = tmp_path / "root"
    segs = echo_segments(root, N)
    roles = ["models.verifier=openai/echo", "verify.shard_size=8", "models.api_key_env={generator: PROGRA_TEST_GENERATOR_KEY}",
             "models.api_key_secret={verifier: progra-test-verifier-key}"]
    cfg = echo_config(root, gen.api_base, *roles, "models.api_base=" + json.dumps({"generator": gen.api_base, "verifier": ver.api_base}))

    aware = run_awareness(cfg, segs)["awareness"]
    verified = stage(name="verify", input_dataset_id=[aware], profile=None, config=cfg)["verified"]
    assert gen.requests() == N and ver.requests() == N  # both keys were sent and accepted
    cat = Catalog(str(root))
    assert cat.sql(f"select count(*) from verified where dataset_id = '{verified}'").column(0)[0].as_py() == N

    # the env key sent to a server that wants another: 401, the stage fails, the quoted key is redacted
    wrong = echo_config(root, other.api_base, "models.api_key_env={generator: PROGRA_TEST_GENERATOR_KEY}",
                        "llm.shard_retries=0", "awareness.max_tokens=99")
    state = run_awareness(wrong, segs, return_state=True)
    assert state.is_failed() and "HTTP 401" in str(state.message) and "[redacted]" in str(state.message)
    assert other.requests() > 0

    cat.refresh()
    secrets = [KEY_ENV.encode(), KEY_SECRET.encode()]
    assert (root / "catalog.duckdb").exists() and list(root.rglob("*.parquet")) and (root / "llm_cache").exists()
    assert _files_holding(root, secrets) == []  # Parquet, manifests, runs records, catalog, response cache
    results = Path(PREFECT_LOCAL_STORAGE_PATH.value())  # persisted task results (the stage tasks persist theirs)
    assert results.exists() and _files_holding(results, secrets) == []
    records = _prefect_records()
    assert any("progra-test-verifier-key" in r for r in records)  # the block's name is a parameter...
    assert [r for r in records if KEY_ENV in r or KEY_SECRET in r] == []  # ...its value is nowhere
    captured = capfd.readouterr()
    assert KEY_ENV not in captured.out + captured.err and KEY_SECRET not in captured.out + captured.err


def test_a_run_parameter_cannot_send_a_worker_key_to_a_new_host(monkeypatch):
    """Keys come from the worker's allowlist (PROGRA_KEY_ENVS), each bound to its hosts; a run's
    overrides naming another env var, another host, or an unlisted Secret block are refused
    before any key is read."""
    from progra_core.config import load_config
    from tasks.runtime import KeyNotAllowed, endpoint, key_env

    monkeypatch.setenv("PROGRA_TEST_GENERATOR_KEY", KEY_ENV)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-very-secret")
    monkeypatch.delenv("PROGRA_KEY_ENVS", raising=False)
    assert key_env("OPENAI_API_KEY", None) == "OPENAI_API_KEY"  # default list: provider keys, provider endpoint
    for env, base in [("OPENAI_API_KEY", "https://evil.example.com/v1"), ("AWS_SECRET_ACCESS_KEY", None),
                      ("PROGRA_TEST_GENERATOR_KEY", "http://127.0.0.1:9/v1")]:
        with pytest.raises(KeyNotAllowed):
            key_env(env, None, base)
    monkeypatch.setenv("PROGRA_KEY_ENVS", "PROGRA_TEST_GENERATOR_KEY@127.0.0.1|llm.internal:8443")
    assert key_env("PROGRA_TEST_GENERATOR_KEY", None, "http://127.0.0.1:8000/v1") == "PROGRA_TEST_GENERATOR_KEY"
    assert key_env("PROGRA_TEST_GENERATOR_KEY", None, "https://llm.internal:8443/v1") == "PROGRA_TEST_GENERATOR_KEY"
    for base in ["https://llm.internal:9999/v1", "http://user@attacker.example.com/v1", "https://127.0.0.1.attacker.io/v1"]:
        with pytest.raises(KeyNotAllowed, match="may not be sent"):
            key_env("PROGRA_TEST_GENERATOR_KEY", None, base)
    with pytest.raises(KeyNotAllowed, match="not on this worker's allowlist"):
        key_env("OPENAI_API_KEY", None)  # an explicit list replaces the defaults
    with pytest.raises(KeyNotAllowed, match="secret:someone-elses-block"):
        key_env(None, "someone-elses-block", "http://127.0.0.1:8000/v1")  # refused before Secret.load
    hostile = load_config("embedded", overrides=["models.generator=openai/x", "models.api_base={generator: https://evil.example.com}",
                                                 "models.api_key_env={generator: AWS_SECRET_ACCESS_KEY}"])
    with pytest.raises(KeyNotAllowed):
        endpoint(hostile, "generator")
