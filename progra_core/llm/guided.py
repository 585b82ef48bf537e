"""Grammar-guided call decoding for ``local/`` models.

A 135M model knows roughly which tool and which values a note asks for, but rarely writes a call
list Python's ``ast`` accepts. Here the call syntax comes from the grammar and only the decisions
come from the model: the function name and each argument name are picked from the tool schema by
likelihood (``extra["choices"]``), and each value is generated freely and kept only as far as it
is a Python literal. The output is always a parsable list (or the cut-off text when a value is
not a literal, which the caller then reports as a parse error). This is how a frozen small policy
can answer in the verifier's and the evaluator's format at all; larger or remote models answer
unguided.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field, replace

from progra_core.llm.gateway import ChatRequest, ChatResult, Gateway
from progra_core.schemas import tool_functions

__all__ = ["guided_calls", "guided_json", "json_pieces", "leading_literal", "mask_free_text"]


def leading_literal(text: str) -> str | None:
    """The shortest non-empty prefix of ``text`` that is a Python literal and is followed by ``,``
    or ``)`` or the end (``'a, b', x=`` -> ``'a, b'``)."""
    for k in [i for i, ch in enumerate(text) if ch in ",)"] + [len(text)]:
        cand = text[:k].strip()
        if not cand:
            continue
        try:
            ast.literal_eval(cand)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        return cand
    return None


def _schema(tools_json: str | list | None) -> dict[str, dict[str, str]]:
    """function -> {parameter: JSON-schema type}."""
    out = {}
    for fn in tool_functions(tools_json):
        if fn.get("name"):
            props = (fn.get("parameters") or {}).get("properties") or {}
            out[fn["name"]] = {p: str((s or {}).get("type", "any")) for p, s in props.items()}
    return out


@dataclass
class _State:
    text: str
    phase: str = "name"  # name | arg | value | after | done | failed
    fn: str | None = None
    used: list[str] = field(default_factory=list)
    kind: str = "any"  # type of the value being written
    calls: int = 0
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


def _options(st: _State, schema: dict[str, list[str]], max_calls: int) -> list[str]:
    if st.phase == "name":
        return [f"{n}(" for n in schema]
    if st.phase == "bool":
        return ["True", "False"]
    if st.phase == "arg":
        sep = ", " if st.used else ""
        return [f"{sep}{p}=" for p in schema.get(st.fn, []) if p not in st.used] + [")"]
    # after a call: close the list or start another
    return ["]"] + ([f", {n}(" for n in schema] if st.calls < max_calls else [])


def _groups(opts: list[str]) -> list[str]:
    """Closing (``)`` or ``]``) is one decision and going on (any next argument or call) is the
    other: the backend weighs them by total probability before it picks among the ways to go on."""
    return ["close" if o in (")", "]") else "go" for o in opts]


def guided_calls(gateway: Gateway, reqs: list[ChatRequest], tools: list[str | list | None], *, max_calls: int = 3,
                 value_tokens: int = 24) -> list[ChatResult]:
    """One call list per request (each request's messages ask for calls; its ``prefix`` should
    open the list, e.g. ``"["``). Steps of all requests are batched together."""
    schemas = [_schema(t) for t in tools]
    states = [_State(text=r.prefix or "[") for r in reqs]
    for st, sc in zip(states, schemas, strict=True):
        if not sc:
            st.text, st.phase = "", "failed"  # nothing to call: an empty answer
    while True:
        pick = [i for i, s in enumerate(states) if s.phase in ("name", "arg", "after", "bool")]
        gen = [i for i, s in enumerate(states) if s.phase == "value"]
        if not pick and not gen:
            break
        if pick:
            opts = {i: _options(states[i], schemas[i], max_calls) for i in pick}
            for i in [i for i in pick if len(opts[i]) == 1]:  # forced move: no need to ask
                _take(states[i], ChatResult(states[i].text + opts[i][0], reqs[i].model), schemas[i])
            pick = [i for i in pick if len(opts[i]) > 1]
            asks = [replace(reqs[i], prefix=states[i].text, max_tokens=1, stop=None,
                            extra={**reqs[i].extra, "choices": opts[i], "groups": _groups(opts[i])}) for i in pick]
            for i, ans in zip(pick, gateway.batch(asks) if asks else [], strict=True):
                _take(states[i], ans, schemas[i])
        if gen:
            asks = [replace(reqs[i], prefix=states[i].text, max_tokens=value_tokens,
                            stop=["'", "\n"] if states[i].kind == "string" else [")", "\n"]) for i in gen]
            for i, ans in zip(gen, gateway.batch(asks), strict=True):
                st = states[i]
                _usage(st, ans)
                if not ans.ok:
                    st.phase, st.error = "failed", ans.error
                    continue
                if st.kind == "string":  # the opening quote was prefilled: the value runs to the next quote
                    body = ans.text[len(st.text):].split("'")[0].split("\n")[0]
                    st.text += body.replace("\\", "\\\\") + "'"
                    st.phase = "arg"
                    continue
                value = leading_literal(ans.text[len(st.text):])
                if value is None:
                    st.text, st.phase = ans.text, "failed"  # not a literal: the caller sees a parse error
                else:
                    st.text += value
                    st.phase = "arg"
    out = []
    for r, st in zip(reqs, states, strict=True):
        out.append(ChatResult(text=st.text if st.error is None else None, model=r.model, role=r.role, id=r.id,
                              error=st.error, finish_reason="stop", prompt_tokens=st.prompt_tokens,
                              completion_tokens=st.completion_tokens, latency_ms=st.latency_ms, attempts=1))
    return out


def _usage(st: _State, ans: ChatResult) -> None:
    st.latency_ms += ans.latency_ms
    st.prompt_tokens = max(st.prompt_tokens, ans.prompt_tokens)
    st.completion_tokens += ans.completion_tokens


def _take(st: _State, ans: ChatResult, schema: dict[str, list[str]]) -> None:
    _usage(st, ans)
    if not ans.ok:
        st.phase, st.error = "failed", ans.error
        return
    choice = ans.text[len(st.text):]
    st.text = ans.text
    if st.phase in ("name", "after"):
        if choice == "]":
            st.phase = "done"
            return
        st.fn = choice.lstrip(", ").rstrip("(")
        st.used, st.phase = [], "arg"
        st.calls += 1
    elif st.phase == "bool":
        st.phase = "arg"
    elif choice == ")":
        st.phase = "after"
    else:
        name = choice.lstrip(", ").rstrip("=")
        st.used.append(name)
        st.kind = schema.get(st.fn, {}).get(name, "any")
        if st.kind == "boolean":
            st.phase = "bool"
        else:
            if st.kind == "string":
                st.text += "'"
            st.phase = "value"


# -- configs shaped like an exemplar ------------------------------------------------------------

def _free_text(value: str) -> bool:
    """Prose worth rewriting (file contents, messages, tweets); identifiers and enum-like values
    (names, ``"directory"``, ``"USD"``) keep the exemplar's wording so the classes still load."""
    return " " in value.strip()


def mask_free_text(obj, placeholder: str = "..."):
    """The object with every free-text value replaced: what a small model is shown of an exemplar
    it must fill, so it writes new prose instead of copying the example's."""
    if isinstance(obj, dict):
        return {k: mask_free_text(v, placeholder) for k, v in obj.items()}
    if isinstance(obj, list):
        return [mask_free_text(v, placeholder) for v in obj]
    return placeholder if isinstance(obj, str) and _free_text(obj) else obj


def json_pieces(template) -> tuple[list[str], list[str]]:
    """The template's JSON cut at every free-text string value: ``(literals, originals)`` with
    ``text = literals[0] + v1 + literals[1] + ... + vn + literals[n]``; each literal before a hole
    ends with the opening quote and the next starts with the closing one."""
    literals, originals = [""], []

    def walk(v) -> None:
        if isinstance(v, dict):
            literals[-1] += "{"
            for i, (k, x) in enumerate(v.items()):
                literals[-1] += (", " if i else "") + json.dumps(k, ensure_ascii=False) + ": "
                walk(x)
            literals[-1] += "}"
        elif isinstance(v, list):
            literals[-1] += "["
            for i, x in enumerate(v):
                literals[-1] += ", " if i else ""
                walk(x)
            literals[-1] += "]"
        elif isinstance(v, str) and _free_text(v):
            literals[-1] += '"'
            originals.append(v)
            literals.append('"')
        else:
            literals[-1] += json.dumps(v, ensure_ascii=False)

    walk(template)
    return literals, originals


def guided_json(gateway: Gateway, reqs: list[ChatRequest], templates: list, *, value_tokens: int = 48) -> list[ChatResult]:
    """One JSON object per request, shaped like its template: structure, keys, numbers and
    identifier-like strings come from the template, every free-text value is written by the model
    (prefilled up to its opening quote, cut at the closing one). The result always parses; whether
    it is new enough is the caller's check. Holes of all requests advance together (batched)."""
    plans = [json_pieces(t) for t in templates]
    texts = [lit[0] for lit, _ in plans]
    states = [_State(text=t) for t in texts]
    hole = 0
    while True:
        todo = [i for i, (lit, _) in enumerate(plans) if hole < len(lit) - 1 and states[i].error is None]
        if not todo:
            break
        asks = [replace(reqs[i], prefix=texts[i], stop=['"', "\n"],
                        max_tokens=min(value_tokens, 8 + len(plans[i][1][hole]) // 3)) for i in todo]
        for i, ans in zip(todo, gateway.batch(asks), strict=True):
            _usage(states[i], ans)
            if not ans.ok:
                states[i].error = ans.error
                continue
            body = ans.text[len(texts[i]):].split('"')[0].split("\n")[0].strip() or plans[i][1][hole]
            texts[i] += json.dumps(body, ensure_ascii=False)[1:-1] + plans[i][0][hole + 1]
        hole += 1
    return [ChatResult(text=texts[k] if st.error is None else None, model=r.model, role=r.role, id=r.id, error=st.error,
                       finish_reason="stop", prompt_tokens=st.prompt_tokens, completion_tokens=st.completion_tokens,
                       latency_ms=st.latency_ms, attempts=1) for k, (r, st) in enumerate(zip(reqs, states, strict=True))]
