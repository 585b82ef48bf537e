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

    from flows.stages import stage
    from storage import Catalog

    gen = katan_echo("--validate-keys", "--api-keys", f"openai={KEY_ENV}")
    ver = katan_echo("--validate-keys", "--api-keys", f"openai={KEY_SECRET}")
    other = katan_echo("--validate-keys", "--api-keys", "openai=sk-that-server-only")
    monkeypatch.setenv("PROGRA_TEST_GENERATOR_KEY", KEY_ENV)
    Secret(value=KEY_SECRET).save("progra-test-verifier-key", overwrite=True)
    root = tmp_path / "root"
    segs = echo_segments(root, N)
    roles = ["models.verifier=openai/echo", "verify.shard_size=8", "models.api_key_env={generator: PROGRA_TEST_GENERATOR_KEY}",
             "models.api_key_secret={verifier: progra-test-verifier-key}"]
    cfg = echo_config(root, gen.api_base, *roles, "models.api_base=" + json.dumps({"generator": gen.api_base, "verifier": ver.api_base}))

    aware = run_awareness(cfg, segs)["awareness"]
    verified = stage(name="verify", input_dataset_id=aware, profile=None, config=cfg)["verified"]
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
