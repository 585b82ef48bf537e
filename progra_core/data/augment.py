"""Stage ``augment`` (Eq. 11): one operation per verified S^a (``ops_per_row`` distinct ones, if
more), sampled with a seeded RNG per awareness id from the configured weights, plus the original
(op ``none``):

* ``paraphrase`` - LLM_aug rewords the user-intent wording; the result must keep its sections and
  every function name and quoted argument value the original mentioned, else it is rejected;
* ``schema_perturb`` - renames one target function and/or changes one argument value within its
  documented range (enum, numeric bounds) or a file/identifier-like string, applied consistently
  to the tool docs, S^a, a_fc and the example's inputs (the query, c_his and this turn's steps:
  the user who asked about ``report.pdf`` now asks about ``report_v2.pdf``); the mapping is
  recorded so the perturbed call can be mapped back;
* ``word_mask`` - masks a fraction of the function-related words (function and parameter names)
  in the example's inputs with ``[MASK]``: the model learns to act on incomplete inputs, and is
  never taught to write a mask.

An op that changes the inputs stores them on its row (``history``, ``query``, ``prior_steps``), so
D_aug says exactly what each training example shows.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import re
from collections import Counter

import pyarrow as pa

from progra_core import versioning
from progra_core.calls import Call, calls_from_records, calls_to_records
from progra_core.config import AugmentConfig
from progra_core.data.awareness import AwarenessParseError, parse_awareness, tool_names
from progra_core.llm import ChatRequest, Gateway
from progra_core.prompts import awareness as prompts
from progra_core.schemas import AUGMENTED, reject

__all__ = ["STAGE", "CODE_VERSION", "AUGMENTED", "OPS", "choose_op", "choose_ops", "schema_perturb", "word_mask", "augment_shard",
           "split_outcomes", "map_back", "MASK"]

STAGE = "augment"
CODE_VERSION = versioning.code_version("1", __name__)
OPS = ("paraphrase", "schema_perturb", "word_mask")
MASK = "[MASK]"

AUGMENTED_SHARD = AUGMENTED.append(pa.field("reject_reason", pa.string())).append(pa.field("reject_detail", pa.string()))

# Realistic renames for BFCL's shell-like names; others switch naming style.
_SYNONYMS = {
    "ls": "list_directory", "cd": "change_directory", "mv": "move_file", "cp": "copy_file", "rm": "remove_file",
    "cat": "read_file", "mkdir": "make_directory", "touch": "create_file", "grep": "search_file", "wc": "count_words",
    "du": "disk_usage", "pwd": "current_directory", "rmdir": "remove_directory", "diff": "compare_files",
    "tail": "file_tail", "echo": "write_text", "sort": "sort_lines", "find": "find_files",
}


def choose_op(awareness_id: str, cfg: AugmentConfig) -> str:
    """The op for one awareness row: seeded by (seed, id), so it does not depend on row order."""
    ops = choose_ops(awareness_id, cfg)
    return ops[0] if ops else "none"


def choose_ops(awareness_id: str, cfg: AugmentConfig) -> list[str]:
    """``cfg.ops_per_row`` distinct ops for one awareness row, drawn by weight without replacement
    (the first is :func:`choose_op`'s), seeded by (seed, id)."""
    ops = [o for o in OPS if cfg.weights.get(o, 0) > 0]
    rng = random.Random(f"{cfg.seed}:{awareness_id}")
    out: list[str] = []
    while ops and len(out) < cfg.ops_per_row:
        pick = rng.choices(ops, weights=[cfg.weights[o] for o in ops])[0]
        out.append(pick)
        ops.remove(pick)
    return out


def _rng(cfg: AugmentConfig, awareness_id: str, salt: str) -> random.Random:
    return random.Random(f"{cfg.seed}:{salt}:{awareness_id}")


def _rename(name: str, taken: set[str]) -> str:
    cand = _SYNONYMS.get(name)
    if cand is None:
        if "_" in name:
            parts = name.split("_")
            cand = parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])
        elif re.search(r"[a-z][A-Z]", name):
            cand = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()
        else:
            cand = f"{name}_tool"
    while cand in taken:
        cand += "_2"
    return cand


def _word(value: str) -> re.Pattern:
    return re.compile(r"(?<![\w.])" + re.escape(value) + r"(?![\w])")


def _new_value(value, schema: dict, rng: random.Random):
    """A different value for a parameter within what its doc allows, or None."""
    enum = schema.get("enum")
    if enum:
        others = [e for e in enum if e != value]
        return rng.choice(others) if others else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        for _ in range(8):
            delta = rng.choice([1, 2, 3, 5]) * rng.choice([-1, 1])
            new = value + delta if isinstance(value, int) else round(value * (1 + delta / 10), 2)
            if (lo is None or new >= lo) and (hi is None or new <= hi) and new != value:
                return new
        return None
    if isinstance(value, str) and re.fullmatch(r"[\w\-]+(\.\w{1,5})?", value) and len(value) >= 3:
        stem, dot, ext = value.rpartition(".") if "." in value else (value, "", "")
        return f"{stem}_v2{dot}{ext}"
    return None


def _subst(pattern: re.Pattern, new: str, context: dict) -> dict:
    """``pattern`` -> ``new`` in every message of an example's inputs."""
    def msgs(ms):
        return [{**m, "content": pattern.sub(new, m["content"] or "")} for m in ms or []]
    return {"history": msgs(context.get("history")), "query": pattern.sub(new, context.get("query") or ""),
            "prior_steps": msgs(context.get("prior_steps"))}


def _call_name(name: str) -> re.Pattern:
    return re.compile(r"(?<![\w.])" + re.escape(name) + r"(?=\s*\()")


def schema_perturb(text: str, tools_json: str, target: list[Call], rng: random.Random,
                   context: dict | None = None) -> tuple[str, str, list[Call], dict, dict] | None:
    """(text, tools, calls, mapping, inputs) with one function renamed and/or one value changed,
    consistently everywhere: the docs, S^a, a_fc and the inputs (a renamed function in the
    calls of c_his; a changed value wherever the query, c_his or the turn's steps mention it).
    None when nothing can be changed coherently."""
    context = {"history": list((context or {}).get("history") or []), "query": (context or {}).get("query") or "",
               "prior_steps": list((context or {}).get("prior_steps") or [])}
    docs = json.loads(tools_json) if tools_json else []
    by_name = {(d.get("function", d)).get("name"): d for d in docs}
    mapping: dict = {"functions": {}, "values": []}
    calls = [Call(c.name, dict(c.args), tuple(c.positional)) for c in target]
    renamable = sorted({c.name for c in calls if c.name in by_name})
    if renamable:
        old = rng.choice(renamable)
        new = _rename(old, set(by_name))
        mapping["functions"][new] = old
        docs = copy.deepcopy(docs)
        for d in docs:
            fn = d.get("function", d)
            if fn.get("name") == old:
                fn["name"] = new
        text = _word(old).sub(new, text)
        context = _subst(_call_name(old), new, context)
        calls = [Call(new if c.name == old else c.name, c.args, c.positional) for c in calls]
    options = []
    for ci, c in enumerate(target):
        props = ((by_name.get(c.name) or {}).get("function", by_name.get(c.name) or {}).get("parameters") or {}).get("properties") or {}
        for k, v in c.args.items():
            if not isinstance(v, (list, dict)) and _word(str(v)).search(text):
                options.append((ci, k, v, props.get(k) or {}))
    rng.shuffle(options)
    for ci, k, v, schema in options:
        new_v = _new_value(v, schema, rng)
        if new_v is None:
            continue
        text = _word(str(v)).sub(str(new_v), text)
        context = _subst(_word(str(v)), str(new_v), context)
        calls[ci] = Call(calls[ci].name, {**calls[ci].args, k: new_v}, calls[ci].positional)
        mapping["values"].append({"call": ci, "param": k, "old": v, "new": new_v})
        break
    if not mapping["functions"] and not mapping["values"]:
        return None
    return text, json.dumps(docs), calls, mapping, context


def map_back(calls: list[Call], mapping: dict) -> list[Call]:
    """Undo the renames of a schema_perturb mapping (values stay perturbed: they are the new task)."""
    back = mapping.get("functions") or {}
    return [Call(back.get(c.name, c.name), c.args, c.positional) for c in calls]


def word_mask(context: dict, tools_json: str, fraction: float, rng: random.Random) -> tuple[dict, int] | None:
    """The example's inputs (query, c_his, the turn's steps) with ``fraction`` (at least one) of
    their function and parameter names masked; None when they mention none."""
    docs = json.loads(tools_json) if tools_json else []
    words = set()
    for d in docs:
        fn = d.get("function", d)
        words.add(fn.get("name") or "")
        words.update(((fn.get("parameters") or {}).get("properties") or {}).keys())
    words = {w for w in words if len(w) >= 2}
    if not words:
        return None
    pat = re.compile(r"(?<![\w])(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")(?![\w])")
    texts = [m["content"] or "" for m in context.get("history") or []] + [context.get("query") or ""]
    texts += [m["content"] or "" for m in context.get("prior_steps") or []]
    spans = [(i, m.span()) for i, t in enumerate(texts) for m in pat.finditer(t)]
    if not spans:
        return None
    k = max(1, math.ceil(fraction * len(spans)))
    for i, (a, b) in sorted(rng.sample(spans, k), reverse=True):
        texts[i] = texts[i][:a] + MASK + texts[i][b:]
    n_hist = len(context.get("history") or [])
    out = {"history": [{**m, "content": t} for m, t in zip(context.get("history") or [], texts[:n_hist], strict=True)],
           "query": texts[n_hist],
           "prior_steps": [{**m, "content": t} for m, t in zip(context.get("prior_steps") or [], texts[n_hist + 1:], strict=True)]}
    return out, k


def _facts(text: str, calls: list[Call]) -> list[str]:
    """Function names and scalar argument values of a_fc that the text mentions (a paraphrase must keep them)."""
    vals = [c.name for c in calls] + [str(v) for c in calls for v in c.args.values() if isinstance(v, (str, int, float)) and not isinstance(v, bool)]
    return [v for v in dict.fromkeys(vals) if v and _word(v).search(text)]


def _aug_id(awareness_id: str, op: str) -> str:
    return hashlib.sha256(f"{awareness_id}|{op}".encode()).hexdigest()[:16]


def augment_items(verified: pa.Table, awareness: pa.Table, segments: pa.Table) -> list[dict]:
    """D_ver: the awareness rows the verifier rebuilt (``equal``), joined with their segment's tools and a_fc."""
    keep = {r["awareness_id"] for r in verified.select(["awareness_id", "equal"]).to_pylist() if r["equal"]}
    cols = ["segment_id", "tools", "target_calls", "history", "query", "prior_steps"]
    segs = {r["segment_id"]: r for r in segments.select(cols).to_pylist()}
    return [{**a, **{c: segs[a["segment_id"]][c] for c in cols[1:]}} for a in awareness.to_pylist() if a["awareness_id"] in keep]


def augment_shard(items: list[dict], gateway: Gateway, augmenter: str, cfg: AugmentConfig,
                  api_base: str | None = None, api_key_env: str | None = None) -> pa.Table:
    """``items``: verified-equal awareness rows joined with their segment (tools, target_calls and
    the inputs: history, query, prior_steps)."""
    rows: list[dict] = []

    def row(it, op, text, tools, calls, mapping=None, who="rule", reason=None, detail=None, parsed=None, context=None):
        s, p, r = parsed or (it["summary"], it["plan"], it["rationale"])
        if op == "schema_perturb" and text is not None and parsed is None:
            try:
                s, p, r = parse_awareness(text)
            except AwarenessParseError:
                pass
        rows.append({"aug_id": _aug_id(it["awareness_id"], op), "awareness_id": it["awareness_id"], "segment_id": it["segment_id"],
                     "op": op, "text": text, "summary": s, "plan": p, "rationale": r, "tools": tools,
                     "target_calls": calls_to_records(calls) if calls is not None else [],
                     "mapping": json.dumps(mapping, default=str) if mapping else None, "augmenter": who,
                     **(context or {"history": None, "query": None, "prior_steps": None}),
                     "reject_reason": reason, "reject_detail": detail})

    para: list[dict] = []

    def _apply(it: dict, op: str, target: list[Call]) -> None:
        if op == "paraphrase":
            para.append(it)
        elif op == "schema_perturb":
            out = schema_perturb(it["text"], it["tools"], target, _rng(cfg, it["awareness_id"], op), it)
            if out is None:
                row(it, op, None, None, None, reason="no_perturbation", detail="no function or value could be changed coherently")
            else:
                text, tools, calls, mapping, context = out
                row(it, op, text, tools, calls, mapping, context=context)
        elif op == "word_mask":
            out = word_mask(it, it["tools"], cfg.mask_fraction, _rng(cfg, it["awareness_id"], op))
            if out is None:
                row(it, op, None, None, None, reason="nothing_to_mask", detail="the inputs mention no function or parameter name")
            else:
                context, k = out
                row(it, op, it["text"], it["tools"], target, {"masked": k}, parsed=(it["summary"], it["plan"], it["rationale"]),
                    context=context)

    for it in items:
        target = calls_from_records(it["target_calls"])
        if cfg.keep_original:
            row(it, "none", it["text"], it["tools"], target, parsed=(it["summary"], it["plan"], it["rationale"]))
        for op in choose_ops(it["awareness_id"], cfg):
            _apply(it, op, target)
    if para:
        reqs = [ChatRequest(prompts.paraphrase_messages(it["text"]), augmenter, role="augmenter", temperature=0.7,
                            max_tokens=max(128, len(it["text"]) // 2), api_base=api_base, api_key_env=api_key_env,
                            id=it["awareness_id"], seed=cfg.seed) for it in para]
        for it, ans in zip(para, gateway.batch(reqs), strict=True):
            target = calls_from_records(it["target_calls"])
            if not ans.ok:
                row(it, "paraphrase", None, None, None, who=augmenter, reason="llm_error", detail=ans.error)
                continue
            try:
                parsed = parse_awareness(ans.text, tool_names(it["tools"]))
            except AwarenessParseError as e:
                row(it, "paraphrase", None, None, None, who=augmenter, reason=f"paraphrase_{e.reason}", detail=e.detail)
                continue
            lost = [f for f in _facts(it["text"], target) if not _word(f).search(ans.text)]
            if lost:
                row(it, "paraphrase", None, None, None, who=augmenter, reason="paraphrase_lost_facts",
                    detail=f"dropped {', '.join(map(repr, lost[:5]))}")
                continue
            row(it, "paraphrase", ans.text.strip(), it["tools"], target, who=augmenter, parsed=parsed)
    return pa.Table.from_pylist(rows, schema=AUGMENTED_SHARD)


def split_outcomes(table: pa.Table | None) -> tuple[pa.Table, list[dict], dict]:
    if table is None or table.num_rows == 0:
        return AUGMENTED.empty_table(), [], {"rows": 0, "rejects": 0, "by_op": {}}
    rows = table.to_pylist()
    ok = [r for r in rows if r["reject_reason"] is None]
    bad = [reject(STAGE, f"{r['awareness_id']}:{r['op']}", r["reject_reason"], r["reject_detail"] or "") for r in rows if r["reject_reason"]]
    out = pa.Table.from_pylist([{k: r[k] for k in AUGMENTED.names} for r in ok], schema=AUGMENTED)
    return out, bad, {"rows": len(ok), "rejects": len(bad), "by_op": dict(Counter(r["op"] for r in ok)),
                      "rejects_by_reason": dict(Counter(r["reason"] for r in bad))}
