"""Reading a record's JSON strictly: what cannot be stored (Arrow) or compared faithfully is a
:class:`RecordError` with a reason, never a row that breaks later or a value silently changed."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["RecordError", "strict_json", "check_storable", "INT_LIMIT"]

INT_LIMIT = 2 ** 63  # integers must fit int64: Arrow, DuckDB and the comparisons all agree on them then


def _constant(name: str):
    raise RecordError("non_finite_number", f"{name} is not a JSON number (NaN and Infinity are refused)")


def _float(text: str) -> float:
    v = float(text)
    if v != v or v in (float("inf"), float("-inf")):
        raise RecordError("non_finite_number", f"{text[:40]} overflows a float")
    return v


def _int(text: str) -> int:
    if len(text) > 20:
        raise RecordError("number_out_of_range", f"an integer of {len(text)} digits (limit: 64-bit integers)")
    v = int(text)
    if not -INT_LIMIT <= v < INT_LIMIT:
        raise RecordError("number_out_of_range", f"{text} does not fit a 64-bit integer")
    return v


def strict_json(text: str):
    """``json.loads`` that refuses what cannot be stored or compared faithfully: NaN/±Infinity,
    floats that overflow (1e400), integers beyond 64 bits; a :class:`RecordError` says which."""
    return json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)


def check_storable(rec: Any) -> None:
    """A parsed record whose every string is valid Unicode (JSON's ``\\ud800`` escapes decode to
    lone surrogates, which Arrow cannot store) and whose numbers are finite and 64-bit."""
    try:
        json.dumps(rec, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise RecordError("lone_surrogate", f"a string holds an unpaired surrogate ({e.reason})") from None
    except ValueError as e:
        raise RecordError("non_finite_number", str(e)) from None
    except TypeError as e:
        raise RecordError("not_json", str(e)) from None
    _check_ints(rec)


def _check_ints(v: Any) -> None:
    if type(v) is int and not -INT_LIMIT <= v < INT_LIMIT:
        raise RecordError("number_out_of_range", "an integer does not fit 64 bits")
    if isinstance(v, dict):
        for x in v.values():
            _check_ints(x)
    elif isinstance(v, list):
        for x in v:
            _check_ints(x)


class RecordError(ValueError):
    """A record that cannot become a trajectory; ``reason`` is a stable code for the rejects table."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
