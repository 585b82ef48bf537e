"""Arrow schemas of the data contracts (DESIGN.md, "Data contracts").

Nested data stays nested (lists/structs) so DuckDB can ``unnest`` it; JSON strings are used only
where the shape is open (environment configs, tool docs, call arguments).
"""

from __future__ import annotations

import pyarrow as pa

CALL = pa.struct(
    [
        ("name", pa.string()),
        ("arguments", pa.string()),  # JSON object of keyword arguments
        ("positional", pa.string()),  # JSON list, null when none
        ("text", pa.string()),  # canonical call text
    ]
)
ACTION = pa.struct([("calls", pa.list_(CALL)), ("observations", pa.list_(pa.string()))])
TURN = pa.struct(
    [
        ("query", pa.string()),
        ("actions", pa.list_(ACTION)),
        ("reply", pa.string()),
        ("tools_added", pa.list_(pa.string())),  # function names made available at this turn
    ]
)

TRAJECTORIES = pa.schema(
    [
        ("trajectory_id", pa.string()),
        ("source", pa.string()),  # bfcl | jsonl | hf | synth
        ("source_id", pa.string()),
        ("category", pa.string()),
        ("split", pa.string()),  # train | held_out
        ("env", pa.string()),
        ("involved_classes", pa.list_(pa.string())),
        ("initial_config", pa.string()),
        ("tools", pa.string()),
        ("scenario", pa.string()),
        ("long_context", pa.bool_()),
        ("turns", pa.list_(TURN)),
        ("n_turns", pa.int32()),
        ("n_calls", pa.int32()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)

REJECTS = pa.schema(
    [
        ("stage", pa.string()),
        ("input_id", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("payload", pa.string()),
    ]
)

FUNNEL = pa.schema([
    ("pipeline_id", pa.string()), ("position", pa.int32()), ("stage", pa.string()), ("stage_dataset_id", pa.string()),
    ("rows_in", pa.int64()), ("rows_out", pa.int64()), ("rejects", pa.int64()), ("rejects_by_reason", pa.string()),
    ("llm_calls", pa.int64()), ("cached_calls", pa.int64()), ("retries", pa.int64()), ("llm_errors", pa.int64()),
    ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()), ("mean_latency_ms", pa.float64()),
])


MODELS = pa.schema([
    ("model_id", pa.string()), ("base", pa.string()), ("adapter_path", pa.string()), ("method", pa.string()),
    ("stage", pa.string()), ("parents", pa.list_(pa.string())), ("metrics", pa.string()), ("config", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")),
])
#: TRL's log history, one row per (step, metric): training curves in SQL.
TRAIN_LOG = pa.schema([("model_id", pa.string()), ("stage", pa.string()), ("step", pa.int32()), ("metric", pa.string()),
                       ("value", pa.float64())])


def stage_schemas() -> dict[str, pa.Schema]:
    """Known stage schemas: the catalog creates an (empty) view for each even before a run."""
    from progra_core import augment, awareness, evaluate, grpo, segment, sft_data, synthesize, verify

    return {"synthesis_attempts": synthesize.SYNTHESIS_ATTEMPTS, "synthesized": TRAJECTORIES, "trajectories": TRAJECTORIES, "segments": segment.SEGMENTS, "awareness": awareness.AWARENESS,
            "verified": verify.VERIFIED, "augmented": augment.AUGMENTED, "sft_examples": sft_data.SFT_EXAMPLES,
            "funnel": FUNNEL, "models": MODELS, "rollouts": grpo.ROLLOUTS, "train_log": TRAIN_LOG,
            "eval_results": evaluate.EVAL_RESULTS}


def empty_table(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


def reject(stage: str, input_id: str | None, reason: str, detail: str = "", payload: str | None = None) -> dict:
    """One ``rejects`` row. ``reason`` is a short stable code for GROUP BY; ``detail`` the message.
    Payloads are truncated to keep a huge bad record from bloating the catalog."""
    if payload is not None and len(payload) > 4096:
        payload = payload[:4096] + f"...[{len(payload) - 4096} more chars]"
    return {"stage": stage, "input_id": input_id, "reason": reason, "detail": detail[:2000], "payload": payload}


def tool_functions(tools_json: str | list | None) -> list[dict]:
    """The function objects of tool docs, whether OpenAI-wrapped (``{"type": "function",
    "function": {...}}``) or bare (BFCL's ``{"name": ..., "parameters": ...}``)."""
    import json

    docs = json.loads(tools_json) if isinstance(tools_json, str) else (tools_json or [])
    return [d.get("function", d) for d in docs]
