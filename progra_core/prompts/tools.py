"""How tool docs, conversations and calls are written into prompts (every role uses these)."""

from __future__ import annotations

import json

from progra_core.schemas import tool_functions

__all__ = ["render_tools", "render_messages", "describe_calls"]


def render_tools(tools_json: str | list | None, full: bool = False) -> str:
    """Tool docs as compact lines (``- name: description. Parameters: arg (type), opt (type, optional)``),
    or as the raw JSON with ``full=True``. Compact text keeps small models' prompts short, and it is
    deliberately not call-shaped: small models copy ``name(arg: type)`` signatures as if they were calls."""
    if full:
        docs = json.loads(tools_json) if isinstance(tools_json, str) else (tools_json or [])
        return json.dumps(docs, ensure_ascii=False)
    lines = []
    for fn in tool_functions(tools_json):
        params = (fn.get("parameters") or {}).get("properties") or {}
        required = set((fn.get("parameters") or {}).get("required") or [])
        args = ", ".join(f"{p} ({(s or {}).get('type', 'any')}{'' if p in required else ', optional'})" for p, s in params.items())
        desc = (fn.get("description") or "").split("Tool description:")[-1].strip().split(". ")[0].strip().rstrip(".")
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
