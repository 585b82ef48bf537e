"""The data contracts: the Arrow schema of every dataset the pipeline writes, in one place.

Nested data stays nested (lists/structs) so DuckDB can ``unnest`` it; JSON strings are used only
where the shape is open (environment configs, tool docs, call arguments). Stage modules import
their output schema from here and :data:`DATASETS` names them all, so the catalog can give every
dataset a (possibly empty) view without importing any stage.
"""

from __future__ import annotations

import json

import pyarrow as pa

# -- trajectories (ingest, synthesize, mix) -------------------------------------------------

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
    # USD by LiteLLM's price map for the priced live calls; unpriced_calls > 0: the true cost is higher
    ("cost_usd", pa.float64()), ("unpriced_calls", pa.int64()),
])


MODELS = pa.schema([
    ("model_id", pa.string()), ("base", pa.string()), ("adapter_path", pa.string()), ("method", pa.string()),
    ("stage", pa.string()), ("parents", pa.list_(pa.string())), ("metrics", pa.string()), ("config", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")),
])
#: TRL's log history, one row per (step, metric): training curves in SQL.
TRAIN_LOG = pa.schema([("model_id", pa.string()), ("stage", pa.string()), ("step", pa.int32()), ("metric", pa.string()),
                       ("value", pa.float64())])

# -- synthesis (Appendix B) ----------------------------------------------------------------

TURN_LOG = pa.struct([
    ("turn_index", pa.int32()),
    ("query", pa.string()),
    ("candidates", pa.int32()),  # K asked
    ("parsed", pa.int32()),  # candidates that parsed to a non-empty call list
    ("groups", pa.int32()),  # distinct call lists among them (schema_equal)
    ("top_share", pa.float64()),  # largest group / K
    ("calls", pa.list_(CALL)),  # the winning call list
    ("state_changed", pa.bool_()),
    ("review_yes", pa.int32()),
    ("review_no", pa.int32()),
    ("outcome", pa.string()),  # ok or a stop reason
])
SYNTHESIS_ATTEMPTS = pa.schema([
    ("attempt_id", pa.string()),
    ("seed", pa.int64()),
    ("involved_classes", pa.list_(pa.string())),
    ("exemplar_ids", pa.list_(pa.string())),
    ("config_iterations", pa.int32()),
    ("config_errors", pa.list_(pa.string())),
    ("initial_config", pa.string()),
    ("stop_reason", pa.string()),
    ("stop_turn", pa.int32()),  # turn index that failed (null: config phase or completed)
    ("turns_verified", pa.int32()),
    ("accepted", pa.bool_()),
    ("trajectory_id", pa.string()),
    ("turns", pa.list_(TURN_LOG)),
    ("llm_calls", pa.int64()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("created_at", pa.timestamp("us", tz="UTC")),
])

# -- the PAG data stages (Fig. 2) ----------------------------------------------------------

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
SEGMENTS = pa.schema(
    [
        ("segment_id", pa.string()),
        ("trajectory_id", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("env", pa.string()),
        ("involved_classes", pa.list_(pa.string())),
        ("turn_index", pa.int32()),
        ("step_index", pa.int32()),
        ("tools", pa.string()),  # JSON docs available at this turn (info_meta)
        ("scenario", pa.string()),  # info_meta
        ("history", pa.list_(MESSAGE)),  # c_his
        ("query", pa.string()),  # q
        ("prior_steps", pa.list_(MESSAGE)),
        ("target_calls", pa.list_(CALL)),  # a_fc
        ("future", pa.list_(MESSAGE)),  # c_fut
    ]
)
AWARENESS = pa.schema(
    [
        ("awareness_id", pa.string()),
        ("segment_id", pa.string()),
        ("generator", pa.string()),
        ("prompt_version", pa.string()),
        ("text", pa.string()),
        ("summary", pa.string()),
        ("plan", pa.string()),
        ("rationale", pa.string()),
        ("attempts", pa.int32()),
        ("retries", pa.int32()),
        ("latency_ms", pa.float64()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
VERIFIED = pa.schema(
    [
        ("awareness_id", pa.string()),
        ("segment_id", pa.string()),
        ("verifier", pa.string()),
        ("predicted_calls", pa.list_(CALL)),
        ("predicted_text", pa.string()),
        ("equal", pa.bool_()),
        ("reason", pa.string()),
        ("latency_ms", pa.float64()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
    ]
)
AUGMENTED = pa.schema(
    [
        ("aug_id", pa.string()),
        ("awareness_id", pa.string()),
        ("segment_id", pa.string()),
        ("op", pa.string()),
        ("text", pa.string()),
        ("summary", pa.string()),
        ("plan", pa.string()),
        ("rationale", pa.string()),
        ("tools", pa.string()),
        ("target_calls", pa.list_(CALL)),
        ("mapping", pa.string()),
        ("augmenter", pa.string()),
        # the example's own inputs where the op changed them (null: the segment's)
        ("history", pa.list_(MESSAGE)),
        ("query", pa.string()),
        ("prior_steps", pa.list_(MESSAGE)),
    ]
)
SFT_EXAMPLES = pa.schema(
    [
        ("example_id", pa.string()),
        ("kind", pa.string()),  # awareness | cold_start
        ("op", pa.string()),  # augmentation op for awareness examples
        ("segment_id", pa.string()),
        ("trajectory_id", pa.string()),
        ("messages", pa.list_(MESSAGE)),
        ("prompt", pa.list_(MESSAGE)),
        ("completion", pa.list_(MESSAGE)),
        ("split", pa.string()),  # train | validation
    ]
)

# -- training and evaluation -------------------------------------------------------------

#: One action of a rollout: what the policy wrote and did, the env's verdict on the turn it closed
#: (``success``, null mid-turn), and its weighted reward terms (``terms``, summing to ``reward``).
ROLLOUT_ACTION = pa.struct([
    ("turn", pa.int32()), ("text", pa.string()), ("summary", pa.string()), ("calls", pa.list_(pa.string())),
    ("observations", pa.list_(pa.string())), ("has_calls", pa.bool_()), ("turn_end", pa.bool_()), ("success", pa.bool_()),
    ("terms", pa.map_(pa.string(), pa.float64())), ("reward", pa.float64()), ("context_tokens", pa.int32()),
    ("model_tokens", pa.int32()),
])
#: One row per PAG-RL rollout: ``rewards`` maps each reward term of the method's rubric to its
#: discounted return (Eq. 6), so a recipe with another term needs no new column.
ROLLOUTS = pa.schema([
    ("run", pa.string()), ("method", pa.string()), ("mode", pa.string()), ("step", pa.int32()),
    ("prompt_id", pa.string()), ("generation", pa.int32()), ("actions", pa.list_(ROLLOUT_ACTION)),
    ("rewards", pa.map_(pa.string(), pa.float64())), ("total_reward", pa.float64()),
    ("advantage", pa.float64()), ("n_actions", pa.int32()), ("tokens", pa.int32()), ("env_tokens", pa.int32()),
    ("turns_passed", pa.list_(pa.bool_())), ("n_turns", pa.int32()), ("stop_reason", pa.string()),
])
EVAL_STEP = pa.struct([
    ("turn", pa.int32()), ("step", pa.int32()), ("text", pa.string()), ("calls", pa.list_(pa.string())),
    ("observations", pa.list_(pa.string())), ("decode_error", pa.string()),
])
EVAL_RESULTS = pa.schema([
    ("model_ref", pa.string()), ("method", pa.string()), ("model", pa.string()), ("prompt", pa.string()),
    ("benchmark", pa.string()), ("category", pa.string()), ("entry_id", pa.string()), ("trial", pa.int32()),
    ("passed", pa.bool_()), ("turn_passed", pa.list_(pa.bool_())), ("turn_errors", pa.list_(pa.string())),
    ("first_failed_turn", pa.int32()), ("n_turns", pa.int32()), ("turns_played", pa.int32()), ("n_steps", pa.int32()),
    ("n_calls", pa.int32()), ("error_type", pa.string()), ("error", pa.string()), ("steps", pa.list_(EVAL_STEP)),
    ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()), ("latency_ms", pa.float64()),
    ("created_at", pa.timestamp("us", tz="UTC")),
    # τ² only: the evaluator's reward and the conversation as τ² messages (JSON)
    ("reward", pa.float64()), ("transcript", pa.string()),
    # next_call only: the output decodes to calls / calls the target's functions (``passed`` = exact)
    ("valid_call", pa.bool_()), ("right_function", pa.bool_()),
])

#: Every dataset the pipeline writes, by the name its catalog view has.
DATASETS: dict[str, pa.Schema] = {
    "trajectories": TRAJECTORIES, "synthesis_attempts": SYNTHESIS_ATTEMPTS, "synthesized": TRAJECTORIES,
    "segments": SEGMENTS, "awareness": AWARENESS, "verified": VERIFIED, "augmented": AUGMENTED,
    "sft_examples": SFT_EXAMPLES, "funnel": FUNNEL, "models": MODELS, "train_log": TRAIN_LOG, "rollouts": ROLLOUTS,
    "eval_results": EVAL_RESULTS,
}


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
    docs = json.loads(tools_json) if isinstance(tools_json, str) else (tools_json or [])
    return [d.get("function", d) for d in docs]
