"""How tool docs, conversations and calls are written into prompts (every role uses these)."""

from __future__ import annotations

import functools
import json
from typing import Literal

from progra_core.schemas import tool_functions

__all__ = ["DocStyle", "render_tools", "render_messages", "describe_calls"]


#: How tool docs are shown to the policy: the same string in SFT, RL and evaluation (``tool_docs``).
DocStyle = Literal["json", "compact"]


def _param(name: str, spec: dict, required: bool) -> str:
    spec = spec or {}
    bits = [str(spec.get("type", "any"))]
    if spec.get("enum"):
        bits.append("one of " + ", ".join(repr(v) for v in spec["enum"]))
    if not required:
        bits.append("optional")
    return f"{name} ({', '.join(bits)})"


def _gist(description: str, words: int = 10) -> str:
    """A description's first sentence, at most ``words`` words (the name and parameters say the rest)."""
    first = description.split("Tool description:")[-1].strip().split(". ")[0].strip().rstrip(".")
    parts = first.split()
    return " ".join(parts[:words])


def render_tools(tools_json: str | list | None, style: DocStyle = "compact") -> str:
    """Tool docs as text. ``json``: the docs as bfcl-eval writes them into its system prompt
    (``json.dumps(docs, indent=4)``). ``compact``: one line per function (``- name: the gist of its description
    (first sentence, at most ten words). Parameters: arg (type), mode (string, one of 'a', 'b'), opt
    (type, optional)``), which keeps a
    small model's prompt short yet shows every name, type, enum and required flag SCHEMA checks; it
    is deliberately not call-shaped (small models copy ``name(arg: type)`` signatures as calls)."""
    if isinstance(tools_json, str):  # the segments of a trajectory share one docs string: rendered once
        return _render_text(tools_json, style)
    return _render(list(tools_json or []), style)


@functools.lru_cache(maxsize=256)
def _render_text(tools_json: str, style: DocStyle) -> str:
    return _render(json.loads(tools_json), style)


def _render(docs: list, style: DocStyle) -> str:
    if style == "json":
        return json.dumps(docs, indent=4)
    lines = []
    for fn in tool_functions(docs):
        params = (fn.get("parameters") or {}).get("properties") or {}
        required = set((fn.get("parameters") or {}).get("required") or [])
        args = ", ".join(_param(p, spec, p in required) for p, spec in params.items())
        desc = _gist(fn.get("description") or "")
        lines.append(f"- {fn.get('name')}: {desc or 'no description'}. Parameters: {args or 'none'}")
    return "\n".join(lines)


def render_messages(messages: list[dict] | None) -> str:
    if not messages:
        return "(nothing yet)"
    tag = {"user": "User", "assistant": "Assistant", "tool": "Result", "system": "System"}
    return "\n".join(f"{tag.get(m['role'], m['role'])}: {m['content']}" for m in messages)


def describe_calls(calls: list[dict] | None) -> str:
    """Calls in words (``cd with folder = 'workspace'``): the generator sees a_fc without a call
    syntax it could copy into the note."""
    out = []
    for c in calls or []:
        args = json.loads(c["arguments"]) if c.get("arguments") else {}
        pos = json.loads(c["positional"]) if c.get("positional") else []
        vals = [repr(v) for v in pos] + [f"{k} = {v!r}" for k, v in args.items()]
        out.append(f"{c['name']} with " + ", ".join(vals) if vals else f"{c['name']} with no arguments")
    return "; then ".join(out) or "(none)"
