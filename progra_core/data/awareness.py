"""Stage ``awareness`` (Eq. 8): LLM_gen writes S^a = summary + plan + rationale for each segment
(or, with ``awareness.generator: template``, :func:`template_awareness` writes it from the segment).

A response is accepted when it has a summary and a plan and contains no literal function call;
otherwise the request is asked again with the reason fed back (``max_attempts`` in all), then the
segment is rejected with that reason. Transport faults are retried inside the gateway and counted
per row (``retries``); an endpoint that stays down fails the shard, never the segment. Work is
done shard by shard (``progra_core.sharding``), so a killed run resumes and a rerun asks nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import Counter
from datetime import UTC, datetime

import pyarrow as pa

from progra_core import versioning
from progra_core.calls import balanced_span, calls_from_records
from progra_core.config import AwarenessConfig
from progra_core.llm import ChatRequest, Gateway
from progra_core.prompts import awareness as prompts
from progra_core.prompts import policy as policy_prompts
from progra_core.prompts import tools as prompt_tools
from progra_core.schemas import AWARENESS, reject, tool_functions

__all__ = ["STAGE", "CODE_VERSION", "AWARENESS", "AwarenessParseError", "parse_awareness", "annotate", "awareness_id",
           "tool_names", "select_segments", "split_outcomes", "template_awareness", "template_target", "TEMPLATE_GENERATOR"]

STAGE = "awareness"
CODE_VERSION = versioning.code_version("1", __name__)

#: Shard rows carry their outcome; rejected rows are split off into ``rejects`` at the end.
AWARENESS_SHARD = AWARENESS.append(pa.field("reject_reason", pa.string())).append(pa.field("reject_detail", pa.string()))

_SECTIONS = ("summary", "plan", "rationale")
# Every pattern here is linear in the answer: possessive quantifiers and no whitespace run that
# two quantifiers can split between them (the earlier ones were quadratic on long blank runs).
_TAG = {s: re.compile(rf"<{s}>\s*+(.*?)(?:</{s}>|(?=<(?:{'|'.join(_SECTIONS)})>)|\Z)", re.S | re.I) for s in _SECTIONS}
_HEADER_ONLY = re.compile(r"(?:#++\s*+|\*\*)?(summary|plan|future plan|rationale)(?:\*\*)?+\s*+:?(?:\*\*)?", re.I)
_HEADER_INLINE = re.compile(r"(?:\*\*)?(summary|plan|rationale)(?:\*\*)?\s*+:\s*+(.+)", re.I | re.S)
_CALL_OPEN = re.compile(r"\[\s*+[A-Za-z_]\w*+\s*+\(")
_CALL_WINDOW, _CALL_CANDIDATES = 4096, 64


def _call_list(text: str) -> bool:
    """Whether ``text`` holds a literal call list ``[name(...), ...]``: a bracket opening on a
    call whose balanced span ends with ``)]``; the first few candidates, each within a window."""
    for k, m in enumerate(_CALL_OPEN.finditer(text)):
        if k >= _CALL_CANDIDATES:
            return False
        span = balanced_span(text[m.start():m.start() + _CALL_WINDOW], "[", "]")
        if span is not None and span[:-1].rstrip().endswith(")"):
            return True
    return False


#: A section with fewer words than this is not a description (e.g. an echo of the format line).
_MIN_WORDS = {"summary": 4, "plan": 3}


def _echoes(section: str, placeholder: str) -> bool:
    """The section opens with the format placeholder, or most of its words come from it."""
    words = re.findall(r"[a-z]{2,}", section.lower())
    ph = re.findall(r"[a-z]{2,}", placeholder.lower())
    if words[:4] == ph[:4]:  # opens with the placeholder (then rambles on)
        return True
    return bool(words) and sum(w in set(ph) for w in words) >= 0.8 * len(words)


class AwarenessParseError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def tool_names(tools_json: str | None) -> list[str]:
    return [fn["name"] for fn in tool_functions(tools_json) if fn.get("name")]


def _headers(text: str):
    """(start, end, section, inline text) of each header line, one line at a time."""
    pos = 0
    for line in text.splitlines(keepends=True):
        start, body = pos, line.strip()
        pos += len(line)
        if not body:
            continue
        if m := _HEADER_ONLY.fullmatch(body):
            yield start, start + len(line.rstrip("\r\n")), m.group(1), None
        elif m := _HEADER_INLINE.fullmatch(body):
            yield start, start + len(line.rstrip("\r\n")), m.group(1), m.group(2)


def _by_headers(text: str) -> dict[str, str]:
    """Fallback for 'Summary:' / '## Plan' style answers."""
    marks = []
    for start, end, name, inline in _headers(text):
        marks.append((start, end, name.lower().replace("future plan", "plan"), inline))
    out: dict[str, str] = {}
    for k, (_, end, name, inline) in enumerate(marks):
        stop = marks[k + 1][0] if k + 1 < len(marks) else len(text)
        body = ((inline or "") + "\n" + text[end:stop]).strip().lstrip("*: ").strip()
        if body and name not in out:
            out[name] = body
    return out


def parse_awareness(text: str | None, names: list[str] | tuple[str, ...] = ()) -> tuple[str, str, str]:
    """(summary, plan, rationale) from a generator answer, or :class:`AwarenessParseError`."""
    if not text or not text.strip():
        raise AwarenessParseError("empty", "the answer is empty")
    found = {s: m.group(1).strip() for s in _SECTIONS if (m := _TAG[s].search(text)) and m.group(1).strip()}
    if not found:
        found = _by_headers(text)
    if not found.get("summary") or not found.get("plan"):
        missing = [s for s in ("summary", "plan") if not found.get(s)]
        raise AwarenessParseError("no_sections", f"missing {' and '.join(missing)} section")
    echo = [s for s in ("summary", "plan") if _echoes(found[s], prompts.AWARENESS_PLACEHOLDERS[s])]
    if echo:
        raise AwarenessParseError("template_echo", f"{' and '.join(echo)} repeats the format instructions instead of content")
    thin = [s for s in ("summary", "plan") if len(re.findall(r"[A-Za-z]{2,}", found[s])) < _MIN_WORDS[s]]
    if thin:
        raise AwarenessParseError("empty_sections", f"{' and '.join(thin)} has almost no content")
    body = " ".join(found.values())
    if names:
        pat = re.compile(r"(?<![\w.])(" + "|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True)) + r")\s*\(")
        m = pat.search(body)
        if m:
            raise AwarenessParseError("contains_function_call", f"it writes a call to {m.group(1)}(...) instead of describing it")
    if _call_list(body):
        raise AwarenessParseError("contains_function_call", "it contains a literal call list")
    rationale = found.get("rationale", "")
    if rationale and _echoes(rationale, prompts.AWARENESS_PLACEHOLDERS["rationale"]):
        rationale = ""  # optional section: an echo of its placeholder is dropped, not fatal
    return found["summary"], found["plan"], rationale


def awareness_id(segment_id: str, generator: str, prompt_version: str) -> str:
    return hashlib.sha256(f"{segment_id}|{generator}|{prompt_version}".encode()).hexdigest()[:16]


def _tools(seg: dict, mode: str) -> str | None:
    """The segment's tool docs, or (``used``) only those its conversation, a_fc or c_fut call."""
    if mode == "all" or not seg.get("tools"):
        return seg.get("tools")
    text = " ".join((m.get("content") or "") for k in ("history", "prior_steps", "future") for m in (seg.get(k) or []))
    called = {c["name"] for c in seg.get("target_calls") or []}
    called |= set(_CALLED.findall(text))  # every `name(` in the text at once, not one regex per tool
    docs = [d for d in _docs(seg["tools"]) if (n := d.get("function", d).get("name")) in called
            or (not _NAME.fullmatch(n) and re.search(rf"(?<![\w.]){re.escape(n)}\s*\(", text))]
    return json.dumps(docs)


#: a call's name as the text writes it (``name(`` not preceded by a word character or a dot), and
#: the names that pattern can find whole; a tool named otherwise is searched for by itself
_CALLED = re.compile(r"(?<![\w.])([\w.]+)\s*\(")
_NAME = re.compile(r"[\w.]+")


@functools.lru_cache(maxsize=64)
def _docs(tools: str) -> tuple:
    """Parsed tool docs, once per distinct docs string (the segments of a trajectory share one)."""
    return tuple(json.loads(tools))


def _accumulate(acc: dict, ans) -> None:
    acc["retries"] += max(0, ans.attempts - 1)
    acc["latency_ms"] += ans.latency_ms
    acc["prompt_tokens"] += ans.prompt_tokens
    acc["completion_tokens"] += ans.completion_tokens


def _generate(gateway: Gateway, convs: list[list[dict]], ids: list[str], generator: str, cfg: AwarenessConfig,
              accs: list[dict], api_base: str | None, api_key_env: str | None) -> list:
    """One answer per conversation. Remote models answer in one request; local models, when
    ``cfg.guided``, write the sections one after another with each opening tag prefilled."""
    local = generator.startswith("local/")
    base = dict(role="generator", temperature=cfg.temperature, api_base=api_base, api_key_env=api_key_env, seed=0)
    if not (local and cfg.guided):
        extra = {"repetition_penalty": cfg.repetition_penalty} if local else {}
        answers = gateway.batch([ChatRequest(c, generator, id=i, max_tokens=cfg.max_tokens, extra=extra, stop=prompts.AWARENESS_STOP,
                                             prefix=prompts.AWARENESS_PREFIX, **base) for c, i in zip(convs, ids, strict=True)])
        for acc, ans in zip(accs, answers, strict=True):
            _accumulate(acc, ans)
        return answers
    budgets = {"summary": cfg.max_tokens // 2, "plan": cfg.max_tokens // 3, "rationale": cfg.max_tokens - cfg.max_tokens // 2 - cfg.max_tokens // 3}
    texts = [""] * len(convs)
    answers = [None] * len(convs)
    live = list(range(len(convs)))
    for k, section in enumerate(_SECTIONS):
        opener = (f"</{_SECTIONS[k - 1]}>\n" if k else "") + f"<{section}>" + prompts.AWARENESS_OPENERS[section]
        reqs = [ChatRequest(convs[i], generator, id=ids[i], max_tokens=budgets[section], prefix=texts[i] + opener,
                            stop=[f"</{section}>"], extra={"repetition_penalty": cfg.repetition_penalty}, **base) for i in live]
        still = []
        for i, ans in zip(live, gateway.batch(reqs), strict=True):
            _accumulate(accs[i], ans)
            answers[i] = ans
            if ans.ok:
                texts[i] = ans.text
                still.append(i)
        live = still
    for i in range(len(convs)):
        if answers[i] is not None and answers[i].ok:
            answers[i].text = texts[i] + "</rationale>"
    return answers


#: the ``generator`` column of rows the template writer made
TEMPLATE_GENERATOR = "template"


def template_awareness(seg: dict) -> tuple[str, str, str]:
    """(summary, plan, rationale) written from the segment itself, no model: the summary is the
    progress of the earlier turns (``policy.progress_note``, the note the previous turn's end
    carries), the current request and what already ran for it; the plan is a_fc in words, then
    the rest of the turn from c_fut (or the answer that ends it); the rationale ties them. A
    zero-cost bootstrap for CPU runs and a floor next to an LLM generator; verification still
    decides what is kept."""
    earlier = policy_prompts.progress_note(policy_prompts.earlier_turns(seg.get("history")))
    done: list = []
    for m in seg.get("prior_steps") or []:
        if m["role"] == "assistant":
            done += policy_prompts.decode_calls(m["content"])[0] or []
    summary = (f"{earlier} " if earlier else "") + f"Now the user asks: {' '.join((seg.get('query') or '').split())}"
    summary += f" Already run for it: {policy_prompts.calls_in_words(done)}." if done else ""
    later: list = []
    for m in seg.get("future") or []:
        if m["role"] == "user":
            break
        if m["role"] == "assistant":
            later += policy_prompts.decode_calls(m["content"])[0] or []
    target = calls_from_records(seg.get("target_calls"))
    plan = f"call {policy_prompts.calls_in_words(target)}"
    plan += f", then {policy_prompts.calls_in_words(later)}, then answer the user." if later else ", then answer the user."
    names = ", ".join(dict.fromkeys(c.name for c in target))
    rationale = (f"The request asks for what {names} does, with the values given"
                 + (" and the results of the calls already run." if done else "; nothing has to run before it."))
    return summary, plan, rationale


def template_target(seg: dict) -> str:
    """The policy's target for a segment with its template awareness (``policy.format_policy_target``)."""
    summary, plan, rationale = template_awareness(seg)
    calls = "[" + ", ".join(c["text"] for c in seg.get("target_calls") or []) + "]"
    return policy_prompts.format_policy_target(calls, summary, plan, rationale)


def _template_rows(segments: list[dict], cfg: AwarenessConfig) -> pa.Table:
    now = datetime.now(UTC)
    rows = []
    for s in segments:
        summary, plan, rationale = template_awareness(s)
        rows.append({
            "awareness_id": awareness_id(s["segment_id"], TEMPLATE_GENERATOR, cfg.prompt_version), "segment_id": s["segment_id"],
            "generator": TEMPLATE_GENERATOR, "prompt_version": cfg.prompt_version,
            "text": f"<summary>{summary}</summary>\n<plan>{plan}</plan>\n<rationale>{rationale}</rationale>",
            "summary": summary, "plan": plan, "rationale": rationale, "created_at": now, "reject_reason": None,
            "reject_detail": None, "attempts": 1, "retries": 0, "latency_ms": 0.0, "prompt_tokens": 0, "completion_tokens": 0,
        })
    return pa.Table.from_pylist(rows, schema=AWARENESS_SHARD)


def annotate(segments: list[dict], gateway: Gateway, generator: str, cfg: AwarenessConfig,
             api_base: str | None = None, api_key_env: str | None = None) -> pa.Table:
    """One shard: rounds of batch requests; failed parses are asked again with the reason fed back.
    ``cfg.generator == "template"``: the rows are written by :func:`template_awareness` (no request)."""
    if cfg.generator == TEMPLATE_GENERATOR:
        return _template_rows(segments, cfg)
    acc = [{"attempts": 0, "retries": 0, "latency_ms": 0.0, "prompt_tokens": 0, "completion_tokens": 0} for _ in segments]
    names = [tool_names(s.get("tools")) for s in segments]
    convs = [prompts.awareness_messages(s, prompt_tools.render_tools(_tools(s, cfg.tools)), cfg.future_chars) for s in segments]
    result: dict[int, dict] = {}
    pending = list(range(len(segments)))
    for _ in range(cfg.max_attempts):
        if not pending:
            break
        answers = _generate(gateway, [convs[i] for i in pending], [segments[i]["segment_id"] for i in pending], generator,
                            cfg, [acc[i] for i in pending], api_base, api_key_env)
        still = []
        for i, ans in zip(pending, answers, strict=True):
            acc[i]["attempts"] += 1
            if not ans.ok:
                result[i] = {"reject_reason": "llm_error", "reject_detail": ans.error}
                continue
            try:
                summary, plan, rationale = parse_awareness(ans.text, names[i])
            except AwarenessParseError as e:
                result[i] = {"reject_reason": e.reason, "reject_detail": e.detail, "text": ans.text}
                convs[i] = convs[i] + [{"role": "assistant", "content": ans.text},
                                       {"role": "user", "content": prompts.AWARENESS_RETRY.format(reason=e.detail)}]
                still.append(i)
                continue
            result[i] = {"text": ans.text.strip(), "summary": summary, "plan": plan, "rationale": rationale,
                         "reject_reason": None, "reject_detail": None}
        pending = still
    now = datetime.now(UTC)
    rows = []
    for i, s in enumerate(segments):
        r = result[i]
        rows.append({
            "awareness_id": awareness_id(s["segment_id"], generator, cfg.prompt_version),
            "segment_id": s["segment_id"],
            "generator": generator,
            "prompt_version": cfg.prompt_version,
            "text": r.get("text"),
            "summary": r.get("summary"),
            "plan": r.get("plan"),
            "rationale": r.get("rationale"),
            "created_at": now,
            "reject_reason": r.get("reject_reason"),
            "reject_detail": r.get("reject_detail"),
            **acc[i],
        })
    return pa.Table.from_pylist(rows, schema=AWARENESS_SHARD)


def select_segments(segments: list[dict], limit: int | None, how: str = "first") -> list[dict]:
    """The slice a ``limit`` keeps: first by id, or the segments with the shortest prompts (their
    tool docs, scenario and context: the rows most likely to fit ``sft.max_length``)."""
    ordered = sorted(segments, key=lambda r: r["segment_id"])
    if how == "shortest":
        def size(r):
            context = sum(len(m["content"] or "") for m in (r.get("history") or []) + (r.get("prior_steps") or []))
            return len(r.get("tools") or "") + len(r.get("scenario") or "") + context + len(r["query"] or "")
        ordered.sort(key=lambda r: (size(r), r["segment_id"]))
    return ordered if limit is None else ordered[:limit]


def split_outcomes(table: pa.Table | None) -> tuple[pa.Table, list[dict], dict]:
    """Accepted rows (AWARENESS schema) and rejects from the concatenated shard tables."""
    if table is None or table.num_rows == 0:
        return AWARENESS.empty_table(), [], {"rows": 0, "rejects": 0, "rejects_by_reason": {}}
    rows = table.to_pylist()
    ok = [r for r in rows if r["reject_reason"] is None]
    bad = [reject(STAGE, r["segment_id"], r["reject_reason"], r["reject_detail"] or "", r.get("text")) for r in rows
           if r["reject_reason"] is not None]
    out = pa.Table.from_pylist([{k: r[k] for k in AWARENESS.names} for r in ok], schema=AWARENESS)
    stats = {
        "rows": len(ok), "rejects": len(bad), "rejects_by_reason": dict(Counter(r["reason"] for r in bad)),
        "attempts_histogram": dict(Counter(int(r["attempts"]) for r in rows)),
        "transport_retries": int(sum(r["retries"] for r in rows)),
        "prompt_tokens": int(sum(r["prompt_tokens"] for r in rows)),
        "completion_tokens": int(sum(r["completion_tokens"] for r in rows)),
    }
    return out, bad, stats
