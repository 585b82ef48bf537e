"""Function-call text <-> structured calls, and the paper's schema-level equality (Eq. 10).

Model output is untrusted. It is parsed with :mod:`ast` into a whitelist of node types (plain-name
calls whose arguments are literals) and is never evaluated. Anything else raises
:class:`CallParseError` with a message that names what was wrong, so a stage can record the reason.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Call",
    "CallParseError",
    "parse_calls",
    "format_calls",
    "format_call",
    "schema_equal",
    "normalize_calls",
    "calls_to_records",
    "calls_from_records",
    "balanced_span",
    "MAX_CALL_TEXT",
    "MAX_INT_BITS",
]

#: Longest text we try to parse; longer input is rejected before :func:`ast.parse` sees it.
MAX_CALL_TEXT = 200_000
#: Largest integer literal (bits): beyond it formatting, hashing and comparison stop being cheap
#: (Python refuses to print ints over 4300 digits); the env budget refuses the same.
MAX_INT_BITS = 4096
_MAX_DEPTH = 50
_LANG = re.compile(r"[a-zA-Z]*+")


def _unfence(src: str) -> str:
    """The inside of a markdown code fence spanning the whole text (```lang ... ```), else the
    text; string operations only, linear in the text (a backtracking regex was quadratic)."""
    if len(src) < 6 or not src.startswith("```") or not src.endswith("```"):
        return src
    return src[_LANG.match(src, 3).end():-3]


class CallParseError(ValueError):
    """The text is not a list of plain function calls with literal arguments."""


@dataclass(frozen=True)
class Call:
    """One function call: ``name(*args, **kwargs)`` with JSON-like literal values.

    ``args`` holds keyword arguments in the order written; ``positional`` holds positional ones
    (BFCL ground truth uses them, e.g. ``sort('final_report.pdf')``). An environment resolves
    positional arguments to parameter names (see ``BFCLEnv.resolve``).
    """

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    positional: tuple[Any, ...] = ()

    def __hash__(self) -> int:  # dict field: hash the canonical text instead
        return hash(format_call(self))

    def to_record(self) -> dict[str, Any]:
        """The Parquet struct: name, JSON arguments, positional JSON, canonical text."""
        return {
            "name": self.name,
            "arguments": json.dumps(self.args, ensure_ascii=False),
            "positional": json.dumps(list(self.positional), ensure_ascii=False) if self.positional else None,
            "text": format_call(self),
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Call:
        pos = rec.get("positional")
        return cls(rec["name"], json.loads(rec.get("arguments") or "{}"), tuple(json.loads(pos)) if pos else ())


# ----------------------------------------------------------------------------- parsing


def _literal(node: ast.AST, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise CallParseError("argument value is nested too deeply")
    if isinstance(node, ast.Constant):
        v = node.value
        if type(v) is int and v.bit_length() > MAX_INT_BITS:  # 0x... literals escape Python's digit limit
            raise CallParseError(f"integer literal of more than {MAX_INT_BITS} bits")
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if isinstance(v, float):
            if not math.isfinite(v):
                raise CallParseError("non-finite float literal")
            return v
        raise CallParseError(f"unsupported literal of type {type(v).__name__}")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = node.operand
        if isinstance(inner, ast.Constant) and type(inner.value) in (int, float):
            v = _literal(inner, depth + 1)
            return -v if isinstance(node.op, ast.USub) else v
        raise CallParseError("unary operator applied to a non-number")
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e, depth + 1) for e in node.elts]
    if isinstance(node, ast.Dict):
        out: dict[Any, Any] = {}
        for k, v in zip(node.keys, node.values, strict=True):
            if k is None:
                raise CallParseError("'**' unpacking inside a dict literal is not allowed")
            key = _literal(k, depth + 1)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise CallParseError("dict keys must be scalar literals")
            out[key] = _literal(v, depth + 1)
        return out
    if isinstance(node, ast.Set):
        raise CallParseError("set literals are not allowed (use a list)")
    if isinstance(node, ast.Call):
        raise CallParseError("nested call as an argument value is not allowed")
    if isinstance(node, ast.Name):
        raise CallParseError(f"bare name {node.id!r} is not a literal value")
    if isinstance(node, ast.Attribute):
        raise CallParseError("attribute access is not allowed")
    if isinstance(node, ast.Subscript):
        raise CallParseError("subscripts are not allowed")
    if isinstance(node, ast.Lambda):
        raise CallParseError("lambdas are not allowed")
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        raise CallParseError("comprehensions are not allowed")
    if isinstance(node, ast.IfExp):
        raise CallParseError("conditional expressions are not allowed")
    if isinstance(node, ast.JoinedStr):
        raise CallParseError("f-strings are not allowed")
    raise CallParseError(f"{type(node).__name__} is not a literal value")


def _call(node: ast.AST) -> Call:
    if not isinstance(node, ast.Call):
        if isinstance(node, ast.Name):
            raise CallParseError(f"{node.id!r} is a bare name, not a call")
        raise CallParseError(f"expected a function call, found {type(node).__name__}")
    func = node.func
    if isinstance(func, ast.Attribute):
        raise CallParseError("attribute access is not allowed (call plain function names only)")
    if not isinstance(func, ast.Name):
        raise CallParseError(f"call target must be a plain name, found {type(func).__name__}")
    name = func.id
    if name.startswith("__") or name.startswith("_"):
        raise CallParseError(f"private or dunder function {name!r} is not allowed")
    positional = []
    for a in node.args:
        if isinstance(a, ast.Starred):
            raise CallParseError("'*' argument unpacking is not allowed")
        positional.append(_literal(a))
    kwargs: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise CallParseError("'**' argument unpacking is not allowed")
        if kw.arg in kwargs:
            raise CallParseError(f"keyword argument {kw.arg!r} repeated")
        kwargs[kw.arg] = _literal(kw.value)
    return Call(name, kwargs, tuple(positional))


def parse_calls(text: str) -> list[Call]:
    """Parse ``[f(a=1), g('x')]`` (or a single ``f(a=1)``) into :class:`Call` objects.

    Accepts an optional surrounding markdown code fence. ``[]`` parses to an empty list.
    Raises :class:`CallParseError` for anything that is not plain calls with literal arguments.
    """
    if not isinstance(text, str):
        raise CallParseError(f"expected text, got {type(text).__name__}")
    if len(text) > MAX_CALL_TEXT:  # capped before anything scans it
        raise CallParseError(f"call text longer than {MAX_CALL_TEXT} characters")
    src = _unfence(text.strip()).strip()
    if not src:
        raise CallParseError("empty call text")
    try:
        module = ast.parse(src, mode="exec")
    except SyntaxError as e:
        raise CallParseError(f"not valid call syntax: {e.msg} (line {e.lineno}, column {e.offset})") from None
    except (ValueError, RecursionError, MemoryError, OverflowError) as e:
        raise CallParseError(f"unparsable call text: {type(e).__name__}") from None
    if len(module.body) != 1:
        raise CallParseError(f"expected one expression, found {len(module.body)} statements (';' or newlines)")
    stmt = module.body[0]
    if not isinstance(stmt, ast.Expr):
        raise CallParseError(f"statements are not allowed ({type(stmt).__name__})")
    expr = stmt.value
    try:
        if isinstance(expr, (ast.List, ast.Tuple)):
            return [_call(e) for e in expr.elts]
        return [_call(expr)]
    except RecursionError:
        raise CallParseError("call text is nested too deeply") from None


# ----------------------------------------------------------------------------- formatting


def _fmt_value(v: Any) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError("non-finite floats cannot be formatted as call literals")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_fmt_value(k)}: {_fmt_value(x)}" for k, x in v.items()) + "}"
    return repr(v)


def format_call(call: Call) -> str:
    """``name(pos, key=value)`` with Python-literal values, keywords in the order given."""
    parts = [_fmt_value(p) for p in call.positional]
    parts += [f"{k}={_fmt_value(v)}" for k, v in call.args.items()]
    return f"{call.name}({', '.join(parts)})"


def format_calls(calls: Iterable[Call]) -> str:
    """The canonical list form ``[f(a=1), g(b='x')]``; ``parse_calls`` inverts it exactly."""
    return "[" + ", ".join(format_call(c) for c in calls) + "]"


def calls_to_records(calls: Iterable[Call]) -> list[dict[str, Any]]:
    return [c.to_record() for c in calls]


def calls_from_records(records: Iterable[dict[str, Any]] | None) -> list[Call]:
    return [Call.from_record(r) for r in (records or [])]


# ----------------------------------------------------------------------------- equality (Eq. 10)

_WS = re.compile(r"\s+")


def _norm(v: Any, ordered: bool) -> Any:
    """A hashable, comparable normal form: whitespace-collapsed strings, numbers by exact value
    (1 == 1.0, 2**53 + 1 != 2**53), bool kept apart from int, lists as multisets unless
    ``ordered``, dicts key-order-free."""
    if v is None:
        return ("none",)
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, int):  # exact: float(v) overflows past 1e308 and merges 2**53 + 1 with 2**53
        return ("num", v)
    if isinstance(v, float):  # 1.0 == 1 and -0.0 == 0.0 (one form, so one sort order); others as floats
        return ("num", int(v)) if math.isfinite(v) and v.is_integer() else ("num", v)
    if isinstance(v, str):
        return ("str", _WS.sub(" ", v).strip())
    if isinstance(v, (list, tuple)):
        items = [_norm(x, ordered) for x in v]
        if not ordered:
            items.sort(key=repr)
        return ("list", tuple(items))
    if isinstance(v, dict):
        return ("dict", tuple(sorted(((_norm(k, ordered), _norm(x, ordered)) for k, x in v.items()), key=repr)))
    return ("other", repr(v))


def normalize_calls(calls: Sequence[Call] | str, *, ordered: bool = False) -> tuple:
    """Normal form of a call list for comparison; the list itself is a multiset unless ``ordered``."""
    if isinstance(calls, str):
        calls = parse_calls(calls)
    forms = [
        (c.name, _norm(list(c.positional), True), _norm(dict(c.args), ordered)) for c in calls
    ]
    if not ordered:
        forms.sort(key=repr)
    return tuple(forms)


def schema_equal(a: Sequence[Call] | str, b: Sequence[Call] | str, *, ordered: bool = False,
                 resolve=None) -> bool:
    """Eq. 10: schema-level equality of two call lists.

    Argument order never matters; strings compare with whitespace runs collapsed and trimmed;
    numbers compare by value (``1 == 1.0``) but booleans are not numbers; lists (and the call list
    itself) compare as multisets unless ``ordered=True``. ``resolve`` (e.g. ``BFCLEnv.resolve``)
    maps positional arguments to parameter names first, so ``sort('a')`` equals
    ``sort(file_name='a')``. Unparsable text compares unequal.
    """
    try:
        if isinstance(a, str):
            a = parse_calls(a)
        if isinstance(b, str):
            b = parse_calls(b)
    except CallParseError:
        return False
    if resolve is not None:
        a = [resolve(c) for c in a]
        b = [resolve(c) for c in b]
    if len(a) != len(b):
        return False
    return normalize_calls(a, ordered=ordered) == normalize_calls(b, ordered=ordered)


def balanced_span(text: str, opener: str, closer: str, quotes: str = "'\"") -> str | None:
    """The first ``opener ... closer`` span of ``text`` with nesting balanced and quoted strings
    (with backslash escapes) skipped; None when there is no opener or it never closes."""
    start = text.find(opener)
    if start < 0:
        return None
    depth, quote, escaped = 0, None, False
    for k in range(start, len(text)):
        ch = text[k]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in quotes:
            quote = ch
        elif ch == opener:
            depth += 1
        elif ch == closer:
            depth -= 1
            if depth == 0:
                return text[start:k + 1]
    return None
