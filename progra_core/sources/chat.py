"""Trajectories from OpenAI chat-format records (JSONL files or a local HF ``datasets`` folder).

A record is ``{"id"?, "messages": [...], "tools"?: [...], "scenario"?, "env"?, "involved_classes"?,
"initial_config"?}`` where messages use the OpenAI roles ``system | user | assistant | tool`` and
assistant tool calls look like ``{"id", "type": "function", "function": {"name", "arguments":
"<json>"}}``. Each user message opens a turn; each assistant message with ``tool_calls`` is one
action whose observations are the following ``tool`` messages (matched by ``tool_call_id`` when
given, else by order); a plain assistant message is the turn's reply.

A record may instead be in BFCL's multi-turn format, ``{"id", "question": [[messages of turn 0],
...], "ground_truth": [[call strings of turn 0], ...], "involved_classes", "initial_config"?,
"missed_function"?}``: its call strings are parsed with ``ast`` (never evaluated), checked against
the classes' functions, and executed in ``BFCLEnv`` as BFCL's own data is.

Bad records never stop a run: they come back as ``rejects`` rows with a specific reason.

datasets is imported inside the functions that use it: heavy, and only some callers need it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from progra_core.calls import Call, CallParseError, calls_to_records, parse_calls
from progra_core.envs import registry
from progra_core.envs.base import CallBudgetError, EnvError
from progra_core.envs.bfcl import function_docs
from progra_core.schemas import reject
from progra_core.sources.bfcl import entry_to_trajectory
from progra_core.sources.strict import RecordError, check_storable, strict_json

__all__ = ["RecordError", "record_to_trajectory", "iter_jsonl", "iter_hf_folder", "MAX_RECORD_BYTES", "MAX_FIELD_CHARS",
           "strict_json", "check_storable"]

MAX_RECORD_BYTES = 8 * 1024 * 1024
#: how far past an oversized line ingest looks for its end before it gives up on the file
MAX_SKIP_BYTES = 256 * 1024 * 1024
MAX_FIELD_CHARS = 1_000_000
_ROLES = {"system", "user", "assistant", "tool", "developer"}


_SPLITS = ("train", "held_out")


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):  # OpenAI content parts
        parts = []
        for p in content:
            if isinstance(p, dict) and isinstance(p.get("text"), str):
                parts.append(p["text"])
            else:
                raise RecordError("bad_content", f"{where}: content parts must be objects with a text field")
        text = "".join(parts)
    else:
        raise RecordError("bad_content", f"{where}: content must be a string, got {type(content).__name__}")
    if len(text) > MAX_FIELD_CHARS:
        raise RecordError("field_too_large", f"{where}: {len(text)} characters (limit {MAX_FIELD_CHARS})")
    return text


def _tool_call(tc: Any, where: str) -> tuple[str | None, Call]:
    if not isinstance(tc, dict):
        raise RecordError("bad_tool_call", f"{where}: tool call must be an object")
    fn = tc.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
        raise RecordError("bad_tool_call", f"{where}: tool call lacks function.name")
    name = fn["name"].strip()
    if not name.isidentifier() or name.startswith("_"):
        raise RecordError("bad_function_name", f"{where}: {name[:80]!r} is not a public identifier")
    raw = fn.get("arguments", "{}")
    if isinstance(raw, str):
        try:
            args = strict_json(raw) if raw.strip() else {}
        except json.JSONDecodeError as e:
            raise RecordError("bad_arguments_json", f"{where}: arguments are not JSON ({e.msg})") from None
        except RecordError as e:
            raise RecordError(e.reason, f"{where}: {e.detail}") from None
        try:
            check_storable(args)
        except RecordError as e:
            raise RecordError(e.reason, f"{where}: {e.detail}") from None
    else:
        args = raw
    if not isinstance(args, dict):
        raise RecordError("bad_arguments_json", f"{where}: arguments must be a JSON object, got {type(args).__name__}")
    cid = tc.get("id")
    if cid is not None and not isinstance(cid, str):
        raise RecordError("bad_tool_call_id", f"{where}: id must be a string, got {type(cid).__name__}")
    return cid, Call(name, args)


def _tool_names(tools: Any) -> set[str] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise RecordError("bad_tools", "tools must be a list")
    names = set()
    for t in tools:
        if not isinstance(t, dict):
            raise RecordError("bad_tools", "each tool must be an object")
        fn = t.get("function", t)
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise RecordError("bad_tools", "tool without a name")
        names.add(fn["name"])
    return names


def bfcl_record_to_trajectory(rec: dict, source: str, source_id: str) -> dict[str, Any]:
    """Convert one BFCL-format record; raises :class:`RecordError` with a specific reason."""
    question, truth = rec.get("question"), rec.get("ground_truth")
    if not isinstance(question, list) or not question or not all(
            isinstance(t, list) and all(isinstance(m, dict) and isinstance(m.get("content", ""), str) for m in t) for t in question):
        raise RecordError("bad_question", "'question' must be a non-empty list of turns, each a list of {role, content} messages")
    big = max((len(m.get("content") or "") for t in question for m in t), default=0)
    if big > MAX_FIELD_CHARS:
        raise RecordError("field_too_large", f"question: a message of {big} characters (limit {MAX_FIELD_CHARS})")
    if not any(m.get("role") == "user" and str(m.get("content", "")).strip() for t in question for m in t):
        raise RecordError("empty_turn", "no turn has a non-empty user message")
    if not isinstance(truth, list) or len(truth) != len(question) or not all(
            isinstance(t, list) and all(isinstance(c, str) for c in t) for t in truth):
        raise RecordError("ground_truth_mismatch", f"'ground_truth' must be a list of call-string lists, one per turn "
                                                   f"({len(question)} turns)")
    classes = rec.get("involved_classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise RecordError("bad_involved_classes", "involved_classes must be a non-empty list of BFCL class names")
    try:
        names = {d["name"] for d in function_docs(classes)}
    except EnvError as e:
        raise RecordError("bad_environment", str(e)) from None
    for t, turn in enumerate(truth):
        for j, text in enumerate(turn):
            where = f"ground_truth[{t}][{j}]"
            if len(text) > MAX_FIELD_CHARS:
                raise RecordError("field_too_large", f"{where}: {len(text)} characters (limit {MAX_FIELD_CHARS})")
            try:
                calls = parse_calls(text)
            except CallParseError as e:
                raise RecordError("bad_call_string", f"{where}: {e}") from None
            unknown = [c.name for c in calls if c.name not in names]
            if unknown:
                raise RecordError("unknown_function", f"{where}: {unknown[0]!r} is not a function of {', '.join(classes)}")
    cfg = rec.get("initial_config", {})
    if not isinstance(cfg, dict):
        raise RecordError("bad_initial_config", f"initial_config must be an object, got {type(cfg).__name__}")
    category = rec.get("category", "base")
    if not isinstance(category, str):
        raise RecordError("bad_category", f"category must be a string, got {type(category).__name__}")
    entry = {"id": source_id, "question": question, "ground_truth": truth, "involved_classes": classes, "initial_config": cfg,
             "missed_function": rec.get("missed_function") or {}, "category": category}
    split = _split(rec)
    try:
        row = entry_to_trajectory(entry, source=source, split=split)
    except CallBudgetError as e:
        raise RecordError("call_budget", str(e)) from None
    except EnvError as e:
        raise RecordError("bad_environment", str(e)) from None
    except Exception as e:  # anything else the conversion trips on is this record's problem
        raise RecordError("bfcl_conversion_failed", f"{type(e).__name__}: {e}") from None
    return row


def _split(rec: dict) -> str:
    """``split`` is ``train`` (the default when absent) or ``held_out``, exactly: anything else
    (``test``, ``HELD_OUT``) is refused, so held-out data never enters training by a typo."""
    split = rec.get("split", "train")
    if split not in _SPLITS:
        raise RecordError("bad_split", f"split must be one of {list(_SPLITS)} (or absent: train), got {str(split)[:40]!r}")
    return split


def _classes_and_env(rec: dict) -> tuple[str | None, list[str]]:
    """``env`` (bfcl, tau2 or a plugin of the config's ``envs``; absent: bfcl when classes are
    given) and its ``involved_classes`` (BFCL class names, the τ² domain; plugins need none), each
    checked against what exists."""
    involved = rec.get("involved_classes", [])
    if not isinstance(involved, list) or not all(isinstance(c, str) for c in involved):
        raise RecordError("bad_involved_classes", "involved_classes must be a list of strings")
    env = rec.get("env", "bfcl" if involved else None)
    kind = None
    if env is not None:
        try:
            kind = registry.get(env)
        except EnvError as e:
            raise RecordError("unknown_env", str(e)[:300]) from None
    if kind is not None and kind.needs_classes and not involved:
        raise RecordError("bad_involved_classes", f"env {env!r} needs involved_classes")
    if env == "bfcl":
        try:
            function_docs(involved)
        except EnvError as e:
            raise RecordError("bad_involved_classes", str(e)) from None
    return env, involved


def record_to_trajectory(rec: Any, source: str, source_id: str) -> dict[str, Any]:
    """Convert one chat (or BFCL-format) record; raises :class:`RecordError` with a specific reason."""
    if not isinstance(rec, dict):
        raise RecordError("not_an_object", f"record is a {type(rec).__name__}, expected an object")
    if "question" in rec and "messages" not in rec:
        return bfcl_record_to_trajectory(rec, source, source_id)
    msgs = rec.get("messages")
    if msgs is None:
        raise RecordError("missing_messages", "record has no 'messages'")
    if not isinstance(msgs, list):
        raise RecordError("bad_messages", f"'messages' must be a list, got {type(msgs).__name__}")
    if not msgs:
        raise RecordError("empty_messages", "'messages' is empty")
    tools = rec.get("tools")
    tool_names = _tool_names(tools)
    system_parts: list[str] = []
    turns: list[dict] = []
    pending: dict[str, int] = {}  # tool_call_id -> index in current action's observations
    n_calls = 0
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RecordError("bad_message", f"{where} is not an object")
        role = m.get("role")
        if role not in _ROLES:
            raise RecordError("unknown_role", f"{where}: role {str(role)[:40]!r}")
        if role in ("system", "developer"):
            system_parts.append(_text(m.get("content"), where))
            continue
        if role == "user":
            q = _text(m.get("content"), where)
            if not q.strip():
                raise RecordError("empty_turn", f"{where}: empty user message")
            turns.append({"query": q, "actions": [], "reply": None, "tools_added": []})
            pending = {}
            continue
        if not turns:
            raise RecordError("no_user_turn", f"{where}: {role} message before any user message")
        turn = turns[-1]
        if role == "assistant":
            tcs = m.get("tool_calls")
            if tcs:
                if not isinstance(tcs, list):
                    raise RecordError("bad_tool_call", f"{where}: tool_calls must be a list")
                if _text(m.get("content"), where).strip():
                    raise RecordError("content_with_tool_calls", f"{where}: text beside tool_calls (an action holds calls only; "
                                                                 "put the text in its own assistant message)")
                parsed = [_tool_call(tc, f"{where}.tool_calls[{j}]") for j, tc in enumerate(tcs)]
                ids = [cid for cid, _ in parsed if cid is not None]
                if len(set(ids)) != len(ids):
                    raise RecordError("bad_tool_call_id", f"{where}: two tool calls share an id")
                if tool_names is not None:
                    unknown = [c.name for _, c in parsed if c.name not in tool_names]
                    if unknown:
                        raise RecordError("unknown_function", f"{where}: {unknown[0]!r} is not among the record's tools")
                pending = {cid: j for j, (cid, _) in enumerate(parsed) if cid}
                turn["actions"].append({"calls": calls_to_records([c for _, c in parsed]), "observations": [None] * len(parsed)})
                n_calls += len(parsed)
            else:
                if turn["reply"] is not None:
                    raise RecordError("two_replies", f"{where}: a second reply in the same turn (merge them, or start a turn)")
                turn["reply"] = _text(m.get("content"), where)
            continue
        # role == "tool"
        if not turn["actions"]:
            raise RecordError("orphan_tool_message", f"{where}: tool message without a preceding tool call")
        obs = turn["actions"][-1]["observations"]
        cid = m.get("tool_call_id")
        if cid is not None and not isinstance(cid, str):
            raise RecordError("bad_tool_call_id", f"{where}: tool_call_id must be a string, got {type(cid).__name__}")
        if turn["reply"] is not None:
            raise RecordError("orphan_tool_message", f"{where}: tool message after the turn's reply")
        if cid is not None and cid in pending:
            slot = pending.pop(cid)
        elif cid is not None and pending:
            raise RecordError("unmatched_tool_call_id", f"{where}: tool_call_id {cid[:60]!r} matches no call of the action")
        else:
            free = [j for j, o in enumerate(obs) if o is None]
            if not free:
                raise RecordError("extra_tool_message", f"{where}: more tool results than calls")
            slot = free[0]
        obs[slot] = _text(m.get("content"), where)
    if not turns:
        raise RecordError("no_user_turn", "record has no user message")
    for t in turns:
        for a in t["actions"]:
            a["observations"] = ["" if o is None else o for o in a["observations"]]
    cfg = rec.get("initial_config")
    if cfg is not None and not isinstance(cfg, dict):
        raise RecordError("bad_initial_config", f"initial_config must be an object, got {type(cfg).__name__}")
    env, involved = _classes_and_env(rec)
    if tools is None and env is not None:  # a plugin env's docs: what its tools are, not what a record says
        try:
            tools = registry.docs(env, involved)
        except EnvError as e:
            raise RecordError("bad_environment", str(e)[:300]) from None
        names = {t["name"] for t in tools or []}
        unknown = sorted({c["name"] for t in turns for a in t["actions"] for c in a["calls"]} - names) if tools else []
        if unknown:
            raise RecordError("unknown_function", f"{unknown[0]!r} is not among env {env!r}'s tools")
    long_context = rec.get("long_context", False)
    if not isinstance(long_context, bool):
        raise RecordError("bad_long_context", f"long_context must be true or false, got {str(long_context)[:40]!r}")
    category = rec.get("category")
    if category is not None and not isinstance(category, str):
        raise RecordError("bad_category", f"category must be a string, got {type(category).__name__}")
    scenario = rec.get("scenario")
    scenario = _text(scenario, "scenario") if scenario is not None else "\n".join(system_parts)
    return {
        "trajectory_id": f"{source}:{source_id}",
        "source": source,
        "source_id": source_id,
        "category": category,
        "split": _split(rec),
        "env": env,
        "involved_classes": involved,
        "initial_config": json.dumps(cfg) if cfg is not None else None,
        "tools": json.dumps(tools) if tools is not None else None,
        "scenario": scenario,
        "long_context": long_context,
        "turns": turns,
        "n_turns": len(turns),
        "n_calls": n_calls,
        "created_at": datetime.now(UTC),
    }


def _records_to_rows(records: Iterable[tuple[str, Any, str | None]], source: str) -> Iterator[tuple[dict | None, dict | None]]:
    """``records`` yields (fallback id, parsed record or exception, raw text for the payload)."""
    seen: set[str] = set()
    for fallback_id, rec, raw in records:
        if isinstance(rec, RecordError):
            yield None, reject("ingest", f"{source}:{fallback_id}", rec.reason, rec.detail, raw)
            continue
        rid = rec.get("id") if isinstance(rec, dict) else None
        sid = str(rid) if isinstance(rid, (str, int)) and str(rid).strip() else fallback_id
        if sid in seen:
            yield None, reject("ingest", f"{source}:{sid}", "duplicate_id", f"id {sid!r} appeared earlier in this source", raw)
            continue
        try:
            check_storable(rec)
            row = record_to_trajectory(rec, source, sid)
        except RecordError as e:
            yield None, reject("ingest", f"{source}:{sid}", e.reason, e.detail, raw)
            continue
        except RecursionError:
            yield None, reject("ingest", f"{source}:{sid}", "too_deep", "record nests too deeply", raw)
            continue
        except Exception as e:  # whatever else a record trips on is that record's reject, never the run's end
            yield None, reject("ingest", f"{source}:{sid}", "conversion_failed", f"{type(e).__name__}: {str(e)[:300]}", raw)
            continue
        seen.add(sid)
        yield row, None


def iter_jsonl(path: str | Path, source: str = "jsonl") -> Iterator[tuple[dict | None, dict | None]]:
    """Rows and rejects from a JSONL file, read as bytes so one bad line cannot stop the file."""
    path = Path(path)
    stem = path.stem

    def records():
        with open(path, "rb") as f:
            lineno = 0
            while line := f.readline(MAX_RECORD_BYTES + 1):  # never more than the limit in memory
                lineno += 1
                fid = f"{stem}:{lineno}"
                if not line.strip():  # counted, so lines in = rows + rejects
                    yield fid, RecordError("blank_line", f"line {lineno} is empty or whitespace"), None
                    continue
                if len(line) > MAX_RECORD_BYTES:
                    size, ended = len(line), line.endswith(b"\n")
                    while not ended and size <= MAX_SKIP_BYTES and (rest := f.readline(1 << 20)):
                        size, ended = size + len(rest), rest.endswith(b"\n")
                    if not ended and size > MAX_SKIP_BYTES:  # e.g. a link to /dev/zero: no line end will come
                        yield fid, RecordError("record_too_large", f"line {lineno}: no line end within {MAX_SKIP_BYTES} bytes; "
                                                                   "the rest of the file is not read"), None
                        return
                    yield fid, RecordError("record_too_large", f"line {lineno}: {size} bytes (limit {MAX_RECORD_BYTES})"), None
                    continue
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield fid, RecordError("not_utf8", f"line {lineno}: invalid UTF-8 at byte {e.start}"), line[:200].decode("utf-8", "replace")
                    continue
                try:
                    rec = strict_json(text)
                except json.JSONDecodeError as e:
                    yield fid, RecordError("invalid_json", f"line {lineno}: {e.msg} at column {e.colno}"), text
                    continue
                except RecordError as e:
                    yield fid, e, text
                    continue
                except RecursionError:
                    yield fid, RecordError("too_deep", f"line {lineno}: JSON nests too deeply"), text
                    continue
                yield fid, rec, text

    yield from _records_to_rows(records(), source)


def iter_hf_folder(path: str | Path, source: str = "hf", split: str | None = None) -> Iterator[tuple[dict | None, dict | None]]:
    """Rows and rejects from a local ``datasets.save_to_disk`` folder (a Dataset or a DatasetDict)."""
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        parts = [ds[split]] if split else [ds[k] for k in ds]
    else:
        parts = [ds]
    stem = Path(path).name

    def records():
        n = 0
        for part in parts:
            for i in range(len(part)):  # by index: a row Arrow cannot decode is its own reject, the rest still come
                n += 1
                try:
                    rec = dict(part[i])
                except Exception as e:
                    yield f"{stem}:{n}", RecordError("unreadable_row", f"row {i}: {type(e).__name__}: {str(e)[:200]}"), None
                    continue
                # Arrow stores tool-call arguments as strings already; tools may be JSON text.
                if isinstance(rec.get("tools"), str):
                    try:
                        rec["tools"] = json.loads(rec["tools"])
                    except json.JSONDecodeError:
                        yield f"{stem}:{n}", RecordError("bad_tools", "tools is a string but not JSON"), None
                        continue
                yield f"{stem}:{n}", rec, None

    yield from _records_to_rows(records(), source)
