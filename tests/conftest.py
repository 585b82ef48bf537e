"""Shared fixtures: environment hygiene, the embedded model, real llm-katan servers on loopback,
and a real (ephemeral) Prefect server for flow tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_TMP_HOME = tempfile.mkdtemp(prefix="progra-test-prefect-")
os.environ["PREFECT_HOME"] = _TMP_HOME  # nothing written to ~ or to the user's storage root
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", os.path.join(_TMP_HOME, "storage"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.pop("PREFECT_API_URL", None)

#: Shared with `make run` (idempotent, file-locked): converted once per checkout.
MODELS_ROOT = Path(os.environ.get("PROGRA_TEST_MODELS", REPO / ".progra" / "models"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    from progra_core.llm.embedded import ensure_embedded_model

    return ensure_embedded_model(MODELS_ROOT)


@pytest.fixture(scope="session")
def tok(embedded_model):
    """The embedded model's tokenizer (SmolLM2's): what the scripted rollouts encode with."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, embedded_model) -> Path:
    """A tiny random-initialised llama with the SmolLM2 tokenizer: real code paths in seconds."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(embedded_model)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=8192, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    path = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


class Server:
    """An llm-katan process. ``stats``: its request-count file; a restart on the same port with the
    same file keeps counting (what the reliability tests use for endpoint outages)."""

    def __init__(self, args: list[str], port: int, name: str, log: Path, stats: Path | None = None):
        self.port = port
        self.name = name
        self.api_base = f"http://127.0.0.1:{port}/v1"
        self.log = log
        self.stats = stats or log.with_suffix(".stats.json")
        self._f = open(log, "wb")
        katan = Path(sys.executable).parent / "llm-katan"
        # setsid: its own process group, stopped by PID below (never by name)
        self.proc = subprocess.Popen([str(katan), *args, "--host", "127.0.0.1", "--port", str(port), "--name", name,
                                      "--stats-file", str(self.stats)],
                                     stdout=self._f, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "HF_HUB_OFFLINE": "1"})

    def wait(self, timeout: float = 180) -> None:
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llm-katan exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"llm-katan did not come up:\n{self.log.read_text()[-3000:]}")

    def requests(self) -> int:
        """Requests the server received, failed ones included (its persistent stats file,
        rewritten after every request: a torn read is read again)."""
        for _ in range(50):
            try:
                return json.loads(self.stats.read_text())["total"] if self.stats.exists() else 0
            except (json.JSONDecodeError, KeyError):
                time.sleep(0.02)
        raise RuntimeError(f"unreadable stats file {self.stats}")

    def settled(self, every_s: float = 0.5) -> int:
        """:meth:`requests` once it stops moving (the server counts a request when its answer is
        sent, so requests still in flight show up a moment later)."""
        last = -1
        while (now := self.requests()) != last:
            last = now
            time.sleep(every_s)
        return now

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._f.close()


@pytest.fixture(scope="session")
def katan_transformers(embedded_model, tmp_path_factory):
    """llm-katan serving the embedded SmolLM2 HF folder with real generations."""
    log = tmp_path_factory.mktemp("katan") / "transformers.log"
    srv = Server(["--backend", "transformers", "--model", str(embedded_model), "--device", "cpu", "--no-quantize",
                  "--max-concurrent", "2"], free_port(), "smollm2", log)
    try:
        srv.wait()
        yield srv
    finally:
        srv.stop()


@pytest.fixture()
def katan_echo(tmp_path):
    """Factory: an llm-katan echo server with fault-injection flags."""
    servers = []

    def start(*flags: str, port: int | None = None, stats: Path | None = None) -> Server:
        srv = Server(["--backend", "echo", "--model", "echo", *flags], port or free_port(), "echo",
                     tmp_path / f"echo{len(servers)}.log", stats)
        servers.append(srv)
        srv.wait(60)
        return srv

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def prefect_server():
    """A real, temporary Prefect server (Prefect's own test harness)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible HTTP server on loopback (moto's server mode, its own process group,
    stopped by PID) and a fresh bucket. The endpoint and credentials go into this process's
    environment, where s3fs/botocore and every child process (spawned writers, ``progra`` CLI
    runs, Dask and Ray workers) pick them up: ``s3://progra-test/...`` then means this server."""
    import uuid

    import httpx

    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    f = open(log, "wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            httpx.get(endpoint, timeout=2)
            break
        except httpx.HTTPError:
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"moto_server did not come up:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.3)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "progra", "AWS_SECRET_ACCESS_KEY": "progra",
           "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    bucket = f"progra-test-{uuid.uuid4().hex[:6]}"
    s3fs.S3FileSystem(use_listings_cache=False).mkdir(bucket)
    yield {"endpoint": endpoint, "bucket": bucket, "env": env}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(15)
    f.close()
