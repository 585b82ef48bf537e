"""Stage ``verify`` (Eq. 9-10): a frozen copy of the target policy (LLM_ver) must rebuild a_fc from
S^a and info_meta alone (never c_his or q); ``schema_equal`` decides. Every awareness row gets a
``verified`` row with ``equal`` and a ``reason``: ok | mismatch | parse_error | empty. A request the
endpoint refused on its merits (400/422) is a reject (``llm_error``); an endpoint that stayed down
fails the shard instead (``EndpointUnavailable``), so it is never recorded as a model failure.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from functools import lru_cache

import pyarrow as pa

from progra_core import versioning
from progra_core.calls import (
    Call,
    CallParseError,
    balanced_span,
    calls_from_records,
    calls_to_records,
    format_calls,
    parse_calls,
    schema_equal,
)
from progra_core.config import VerifyConfig
from progra_core.envs.factory import resolver as env_resolver
from progra_core.llm import ChatRequest, ChatResult, Gateway, guided
from progra_core.prompts import awareness as prompts
from progra_core.prompts import tools as prompt_tools
from progra_core.schemas import VERIFIED, reject

__all__ = ["STAGE", "CODE_VERSION", "VERIFIED", "extract_call_text", "rebuilt_equal", "verify_shard", "split_outcomes", "resolver"]

STAGE = "verify"
CODE_VERSION = versioning.code_version("1", __name__)

VERIFIED_SHARD = VERIFIED.append(pa.field("reject_reason", pa.string())).append(pa.field("reject_detail", pa.string()))

_ANSWER = re.compile(r"<answer>\s*+(.*?)\s*(?:</answer>|\Z)", re.S | re.I)
_FENCE = re.compile(r"```[a-zA-Z]*+\s*+(.*?)```", re.S)  # possessive: linear (backtracking was quadratic)


def extract_call_text(text: str) -> str:
    """The call list inside a model answer: ``<answer>`` tags, a code fence, the first bracketed
    list, or the whole text."""
    if (m := _ANSWER.search(text)) is not None:
        return m.group(1).strip()
    if (m := _FENCE.search(text)) is not None:
        return m.group(1).strip()
    return balanced_span(text, "[", "]") or text.strip()


@lru_cache(maxsize=64)
def resolver(env: str | None, classes: tuple[str, ...]):
    """The env's ``resolve`` for positional arguments (any registered kind: BFCL classes, a τ²
    domain, a plugin's); None when the row names no classes or no kind that can be built."""
    return env_resolver(env, list(classes))  # names arguments, runs nothing


def rebuilt_equal(text: str | None, target: list[Call], resolve=None) -> tuple[list[Call], bool, str]:
    """(predicted calls, equal, reason) for one verifier answer: did LLM_ver rebuild a_fc (Eq. 10)?
    Named apart from the turn judge of TARL (``train/judge.py``), which scores RL turns."""
    if text is None or not text.strip():
        return [], False, "empty"
    try:
        pred = parse_calls(extract_call_text(text))
    except CallParseError:
        return [], False, "parse_error"
    if not pred:
        return [], False, "empty"
    if resolve is not None:
        pred = [resolve(c) for c in pred]
    eq = schema_equal(pred, target, resolve=resolve)
    return pred, eq, "ok" if eq else "mismatch"


#: The segment columns a verifier needs besides the awareness row.
SEGMENT_COLUMNS = ["segment_id", "tools", "scenario", "target_calls", "env", "involved_classes"]


def verify_items(awareness: pa.Table, segments: pa.Table) -> list[dict]:
    """Each awareness row joined with the segment it describes (info_meta and a_fc)."""
    segs = {r["segment_id"]: r for r in segments.select(SEGMENT_COLUMNS).to_pylist()}
    return [{**a, **{k: v for k, v in segs[a["segment_id"]].items() if k != "segment_id"}} for a in awareness.to_pylist()]


def verify_shard(items: list[dict], gateway: Gateway, verifier: str, cfg: VerifyConfig,
                 api_base: str | None = None, api_key_env: str | None = None) -> pa.Table:
    """``items``: awareness rows joined with their segment (tools, scenario, target_calls, env,
    involved_classes). Batched: local models answer many per forward pass."""
    reqs = [ChatRequest(prompts.verify_messages(prompt_tools.render_tools(it["tools"]), it.get("scenario") or "", it["text"]),
                        verifier, role="verifier", temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                        api_base=api_base, api_key_env=api_key_env, id=it["awareness_id"], seed=0,
                        prefix=prompts.VERIFY_PREFIX, stop=["\n\n"]) for it in items]
    if cfg.guided and verifier.startswith("local/"):
        answers = _guided_answers(gateway, reqs, items, cfg)
    else:
        answers = gateway.batch(reqs)
    rows = []
    for it, ans in zip(items, answers, strict=True):
        base = {"awareness_id": it["awareness_id"], "segment_id": it["segment_id"], "verifier": verifier,
                "latency_ms": ans.latency_ms, "prompt_tokens": ans.prompt_tokens, "completion_tokens": ans.completion_tokens}
        if not ans.ok:
            rows.append({**base, "predicted_calls": [], "predicted_text": None, "equal": False, "reason": None,
                         "reject_reason": "llm_error", "reject_detail": ans.error})
            continue
        resolve = resolver(it.get("env"), tuple(it.get("involved_classes") or ()))
        pred, eq, reason = rebuilt_equal(ans.text, calls_from_records(it["target_calls"]), resolve)
        rows.append({**base, "predicted_calls": calls_to_records(pred), "predicted_text": ans.text, "equal": eq,
                     "reason": reason, "reject_reason": None, "reject_detail": None})
    return pa.Table.from_pylist(rows, schema=VERIFIED_SHARD)


def _guided_answers(gateway: Gateway, reqs: list[ChatRequest], items: list[dict], cfg: VerifyConfig) -> list[ChatResult]:
    """Guided answers; with ``call_by_call`` an a_fc of n calls is asked n times: step k opens the
    list with a_fc's first k calls and may add one call, the last step may close or go on. The
    answers are joined into one list (the first failure stands for the whole)."""
    tools = [it["tools"] for it in items]
    if not cfg.call_by_call:
        return guided.guided_calls(gateway, reqs, tools, max_calls=cfg.max_calls)
    steps: list[tuple[int, int, ChatRequest, bool]] = []  # (item, k, request, last)
    for i, (it, req) in enumerate(zip(items, reqs, strict=True)):
        target = calls_from_records(it["target_calls"])
        n = max(1, len(target))
        for k in range(n):
            prefix = req.prefix if k == 0 else format_calls(target[:k])[:-1] + ", "
            steps.append((i, k, replace(req, prefix=prefix), k == n - 1))
    answers: dict[tuple[int, int], ChatResult] = {}
    for last, cap in ((False, 1), (True, cfg.max_calls)):
        part = [s for s in steps if s[3] is last]
        out = guided.guided_calls(gateway, [s[2] for s in part], [tools[s[0]] for s in part], max_calls=cap) if part else []
        answers.update({(s[0], s[1]): a for s, a in zip(part, out, strict=True)})
    by_item: dict[int, list[ChatResult]] = {}
    for i, k, _, _ in steps:
        by_item.setdefault(i, []).append(answers[(i, k)])
    return [_join(by_item[i]) for i in range(len(reqs))]


def _join(answers: list[ChatResult]) -> ChatResult:
    """Step k's own calls (those after its k forced ones) of every step, as one answer."""
    usage = {"latency_ms": sum(a.latency_ms for a in answers),
             "prompt_tokens": max(a.prompt_tokens for a in answers),
             "completion_tokens": sum(a.completion_tokens for a in answers)}
    if len(answers) == 1:
        return answers[0]
    calls: list[Call] = []
    for k, a in enumerate(answers):
        if not a.ok or a.text is None:
            return replace(a, **usage)
        try:
            calls += parse_calls(extract_call_text(a.text))[k:]
        except CallParseError:
            return replace(a, **usage)
    return replace(answers[-1], text=format_calls(calls), **usage)


def split_outcomes(table: pa.Table | None) -> tuple[pa.Table, list[dict], dict]:
    if table is None or table.num_rows == 0:
        return VERIFIED.empty_table(), [], {"rows": 0, "equal": 0, "rejects": 0, "by_reason": {}}
    rows = table.to_pylist()
    ok = [r for r in rows if r["reject_reason"] is None]
    bad = [reject(STAGE, r["awareness_id"], r["reject_reason"], r["reject_detail"] or "") for r in rows if r["reject_reason"]]
    out = pa.Table.from_pylist([{k: r[k] for k in VERIFIED.names} for r in ok], schema=VERIFIED)
    stats = {"rows": len(ok), "equal": sum(r["equal"] for r in ok), "rejects": len(bad),
             "by_reason": dict(Counter(r["reason"] for r in ok)),
             "rejects_by_reason": dict(Counter(r["reason"] for r in bad)),
             "prompt_tokens": int(sum(r["prompt_tokens"] for r in rows)),
             "completion_tokens": int(sum(r["completion_tokens"] for r in rows))}
    return out, bad, stats
