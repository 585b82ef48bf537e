"""Where the pipeline keeps its data, which models fill its roles, how LLM calls are made, and
where its stages run: the sections no single stage owns."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from progra_core.config.base import Section

__all__ = ["StorageConfig", "ModelsConfig", "LLMConfig", "DispatchConfig"]


class StorageConfig(Section):
    root: str = Field("./.progra", description="Storage root: a local folder or an fsspec URL (s3://..., memory://...).")
    catalog_path: str | None = Field(None, description="DuckDB file; default {root}/catalog.duckdb for local roots.")


class ModelsConfig(Section):
    """Every LLM role is a LiteLLM model string (``openai/gpt-4o``, ``hosted_vllm/<m>``) or
    ``local/<name>`` (in-process transformers; ``local/smollm2`` is the embedded model)."""

    policy: str = Field("local/smollm2", description="Target policy base model (path, HF id or local/{name}).")
    generator: str = Field("local/smollm2", description="LLM_gen: writes awareness (S^a) and synthesis configs/queries.")
    verifier: str = Field("policy", description=(
        "LLM_ver: the frozen target policy that rebuilds a_fc from S^a. 'policy' (default) = models.policy itself: "
        "in-process when it is local/{name}, else as served at api_base.verifier (hosted_vllm/{policy}); or any model string."))
    augmenter: str = Field("local/smollm2", description="LLM_aug: paraphrases awareness text.")
    action: str = Field("local/smollm2", description="Synthesis action voters.")
    reviewer: str = Field("local/smollm2", description="Synthesis reviewers for read-only turns.")
    user_simulator: str = Field("local/smollm2", description="User simulator for tau2-bench evaluation.")
    judge: str = Field("local/smollm2", description="Turn-level judge (TARL): scores each finished RL turn -1/0/1 "
                                                   "for methods whose reward has the judge term (progra_tarl).")
    api_base: dict[str, str] = Field(default_factory=dict, description="Per-role api_base, e.g. {generator: http://gpu:8000/v1}.")
    api_key_env: dict[str, str] = Field(default_factory=dict, description="Per-role env var holding the API key (never the key).")
    api_key_secret: dict[str, str] = Field(default_factory=dict, description=(
        "Per-role Prefect Secret block holding the API key, read on the worker at run time (wins over api_key_env)."))

    @model_validator(mode="after")
    def _verifier_is_the_policy(self):
        """Resolve ``verifier: policy`` so that changing the policy changes the verifier with it."""
        if self.verifier != "policy":
            return self
        if self.policy.startswith("local/"):
            self.verifier = self.policy
        elif "verifier" in self.api_base:
            self.verifier = f"hosted_vllm/{self.policy}"
        else:
            raise ValueError(f"models.verifier=policy: the policy {self.policy!r} is not local/<name>, so the verifier needs "
                             "it served: set models.api_base.verifier to its `vllm serve` URL, or name models.verifier")
        return self


class LLMConfig(Section):
    concurrency: int = Field(8, ge=1, description="Requests in flight per endpoint, shared by all shard tasks of a process.")
    global_limit: bool = Field(False, description=(
        "Hold llm.concurrency per endpoint across every worker (Dask/Ray processes, pods, parallel runs) with a "
        "Prefect global concurrency limit on the Prefect server they share; costs one lease round trip per request."))
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(6, ge=0, description="Retries on 429/5xx/timeouts/connection errors.")
    backoff_initial_s: float = Field(0.5, gt=0, description="First backoff (exponential with full jitter).")
    backoff_max_s: float = Field(30.0, gt=0, description="Backoff cap.")
    cache: bool = Field(True, description="Persistent response cache under {root}/llm_cache: a rerun never asks twice.")
    shard_retries: int = Field(2, ge=0, description=(
        "Times a shard whose endpoint stayed down past max_retries is tried again (cached answers replay, only the rest is asked)."))
    shard_retry_delay_s: float = Field(30.0, ge=0, description="Wait before such a shard retry (lets a rate-limit window pass).")
    local_batch_size: int = Field(8, ge=1, description="Requests per forward pass for local/ models.")
    local_batch_tokens: int | Literal["auto"] | None = Field("auto", description=(
        "local/ models: most padded prompt tokens (rows x longest prompt) per forward pass; long prompts go alone. "
        "auto: 8192 on CPU (padding a batch to a long prompt costs more than it saves), on CUDA what half the memory "
        "left after loading the model holds (KV cache + activations). None: batch_size alone decides."))
    local_prefix_cache_mb: int = Field(2048, ge=0, description=(
        "local/ models: memory for KV caches of prompts already computed (an LRU, MiB of tensors), so a "
        "prompt sharing a prefix with an earlier one (the docs of every BFCL step, a turn's conversation, "
        "guided decoding's successive questions) computes only the rest; 0 turns reuse off. SmolLM2-135M in "
        "float32 holds ~46 KiB per token: 2048 MiB is ~45k tokens"))
    local_static_cache: bool = Field(True, description=(
        "local/ models: decode into a preallocated KV cache written in place (transformers StaticCache) instead of "
        "one that is copied whole at every new token; same tokens, and about half a decode step saved at a 4.6k-token "
        "prompt on CPU. Models with sliding-window or non-attention layers always use the dynamic cache."))
    local_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description=(
        "local/ models' weights: auto = bfloat16 on a CUDA device that supports it and on a CPU with AMX tiles "
        "(~3x faster prefill there), float32 elsewhere. Part of every cached answer's key, resolved."))


class DispatchConfig(Section):
    """Where GPU stages run and how stage tasks fan out over shards."""

    mode: Literal["local", "work_pool"] = Field("local", description=(
        "GPU stages (verify with a local/ verifier, sft, grpo, evaluate): in this process, or as runs of the "
        "stage-{name} deployments on the GPU work pool (run_deployment; dataset ids in, dataset ids out)."))
    gpu_pool: str = Field("progra-gpu", description=(
        "Work pool the GPU stages' deployments are on (deployments/prefect.yaml): named in the timeout error, "
        "and a dispatched run that ran on another pool is logged as a warning."))
    timeout_s: int = Field(6 * 3600, ge=1, description="Longest wait for one dispatched stage run; past it the pipeline fails.")
    poll_s: float = Field(2.0, gt=0, description="How often the pipeline polls a dispatched stage run.")
    task_runner: Literal["thread", "dask", "ray"] = Field("thread", description=(
        "Prefect task runner the flows map shard tasks on: a thread pool, or prefect-dask / prefect-ray when installed."))
    max_workers: int = Field(4, ge=1, description="Shard tasks in flight (thread pool size; workers of a local Dask cluster; CPUs of a local Ray cluster).")
    address: str | None = Field(None, description="dask/ray: address of an existing cluster (None: start a local one).")

