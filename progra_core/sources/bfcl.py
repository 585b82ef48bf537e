"""BFCL multi-turn data: entries, ground truth, function docs, the train/held-out split, and the
conversion of an entry into a ``trajectories`` row by executing its ground truth in ``BFCLEnv``.

The split
---------
BFCL's four multi-turn categories are variants of the same 200 scenarios: ``multi_turn_base_17``,
``multi_turn_miss_func_17``, ``multi_turn_miss_param_17`` and ``multi_turn_long_context_17`` share
their task. We therefore split by the scenario index ``n`` (the number after the last ``_``), never
by the full id, so no variant of a held-out scenario can leak into training::

    held_out  iff  int(sha256(f"{salt}:{n}").hexdigest()[:8], 16) % 100 < held_out_percent

with ``salt = "progra-bfcl-split-v1"`` and ``held_out_percent = 50`` by default (config
``ingest.held_out_percent``). The assignment of a scenario never changes between runs or machines.

bfcl-eval's data is imported inside the functions that use it: heavy, and only some callers need it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from progra_core.calls import Call, calls_to_records, parse_calls
from progra_core.envs import budget
from progra_core.envs.base import CallBudgetError
from progra_core.envs.bfcl import _data_dir, function_docs
from progra_core.envs.factory import make_env
from progra_core.schemas import reject

__all__ = [
    "CATEGORIES",
    "ADDED_FUNCTIONS_PROMPT",
    "load_entries",
    "scenario_index",
    "split_of",
    "entry_to_trajectory",
    "iter_trajectories",
    "select_entries",
    "eval_entries",
]

CATEGORIES = ("base", "miss_func", "miss_param", "long_context")
SPLIT_SALT = "progra-bfcl-split-v1"
#: The user message BFCL sends on a miss_func turn that only adds the withheld functions.
ADDED_FUNCTIONS_PROMPT = "I have updated some more functions you can choose from. What about now?"

StepMode = Literal["per_call", "per_turn"]


def _read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@lru_cache(maxsize=8)
def _load(category: str) -> tuple[dict, ...]:
    if category not in CATEGORIES:
        raise ValueError(f"unknown BFCL multi-turn category {category!r}; choose from {CATEGORIES}")
    d = _data_dir()
    questions = _read_jsonl(d / f"BFCL_v4_multi_turn_{category}.json")
    answers = {a["id"]: a["ground_truth"] for a in _read_jsonl(d / "possible_answer" / f"BFCL_v4_multi_turn_{category}.json")}
    out = []
    for q in questions:
        e = dict(q)
        e["category"] = category
        e["ground_truth"] = answers.get(q["id"])
        e.setdefault("missed_function", {})
        e.setdefault("excluded_function", [])
        out.append(e)
    return tuple(out)


def load_entries(category: str, ids: Sequence[str] | None = None) -> list[dict]:
    """Entries of a category with their ``ground_truth`` (list of call strings per turn) merged in,
    and ``missed_function`` (turn index -> names withheld until that turn) / ``excluded_function``
    always present. Returns deep-enough copies: callers may mutate them."""
    entries = [json.loads(json.dumps(e)) for e in _load(category)]
    if ids is not None:
        wanted = set(ids)
        entries = [e for e in entries if e["id"] in wanted]
    return entries


def scenario_index(entry_id: str) -> int:
    try:
        return int(entry_id.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        raise ValueError(f"not a BFCL multi-turn id: {entry_id!r}") from None


def split_of(entry_id: str, held_out_percent: int = 50, salt: str = SPLIT_SALT) -> str:
    """``"train"`` or ``"held_out"`` for a BFCL id, by scenario index (see module docstring)."""
    n = scenario_index(entry_id)
    bucket = int(hashlib.sha256(f"{salt}:{n}".encode()).hexdigest()[:8], 16) % 100
    return "held_out" if bucket < held_out_percent else "train"


def initial_tools(entry: dict) -> tuple[list[dict], dict[int, list[str]]]:
    """Docs available at turn 0 and the names added at later turns (miss_func withholding)."""
    docs = function_docs(entry["involved_classes"])
    added: dict[int, list[str]] = {int(k): list(v) for k, v in (entry.get("missed_function") or {}).items()}
    withheld = {n for names in added.values() for n in names}
    return [d for d in docs if d["name"] not in withheld], added


def entry_to_trajectory(entry: dict, step_mode: StepMode = "per_call", held_out_percent: int = 50, source: str = "bfcl",
                        split: str | None = None) -> dict[str, Any]:
    """Execute an entry's ground truth turn by turn in a fresh ``BFCLEnv`` and build the row.

    ``per_call`` makes each ground-truth call its own assistant step (the usual agent loop);
    ``per_turn`` makes the whole turn one parallel step. Positional arguments are resolved to
    parameter names so downstream data is uniform. A turn without ground truth (miss_param:
    the assistant should ask) has no actions. ``source``/``split``: for BFCL-format records from
    a user's file (their ids need not follow BFCL's, so the split is given, not derived).
    """
    category = entry.get("category", "base")
    long_context = category == "long_context"
    env = make_env("bfcl", entry["involved_classes"], entry["initial_config"], long_context)
    _, added = initial_tools(entry)
    gt = entry.get("ground_truth")
    if gt is None or len(gt) != len(entry["question"]):
        raise ValueError(f"{entry['id']}: ground truth has {0 if gt is None else len(gt)} turns, question has {len(entry['question'])}")
    turns = []
    n_calls = 0
    for i, (messages, gt_turn) in enumerate(zip(entry["question"], gt, strict=True)):
        query = "\n".join(m.get("content", "") for m in messages if m.get("role") == "user")
        if not messages and i in added:
            query = ADDED_FUNCTIONS_PROMPT
        calls: list[Call] = [env.resolve(c) for c in parse_calls("[" + ", ".join(gt_turn) + "]")] if gt_turn else []
        groups = [[c] for c in calls] if step_mode == "per_call" else ([calls] if calls else [])
        actions = []
        for group in groups:
            obs = env.execute(group)
            if over := next((o for o in obs if budget.budget_error(o)), None):
                raise CallBudgetError(f"{entry['id']} turn {i}: a ground-truth call exceeds the execution budget ({over})")
            actions.append({"calls": calls_to_records(group), "observations": obs})
        n_calls += len(calls)
        turns.append({"query": query, "actions": actions, "reply": None, "tools_added": added.get(i, [])})
    return {
        "trajectory_id": f"{source}:{entry['id']}",
        "source": source,
        "source_id": entry["id"],
        "category": category,
        "split": split or split_of(entry["id"], held_out_percent),
        "env": "bfcl",
        "involved_classes": list(entry["involved_classes"]),
        "initial_config": json.dumps(entry["initial_config"]),
        "tools": json.dumps(function_docs(entry["involved_classes"])),
        "scenario": env.scenario(),
        "long_context": long_context,
        "turns": turns,
        "n_turns": len(turns),
        "n_calls": n_calls,
        "created_at": datetime.now(UTC),
    }


def select_entries(categories: Sequence[str] = ("base",), split: str | None = "train", held_out_percent: int = 50,
                   limit: int | None = None) -> list[dict]:
    """Entries of the categories on one side of the split (``None`` = both), at most ``limit``."""
    out = [e for cat in categories for e in load_entries(cat)
           if split is None or split_of(e["id"], held_out_percent) == split]
    return out if limit is None else out[:limit]


def iter_trajectories(
    categories: Sequence[str] = ("base",),
    split: str | None = "train",
    held_out_percent: int = 50,
    step_mode: StepMode = "per_call",
    limit: int | None = None,
    entries: list[dict] | None = None,
) -> Iterator[tuple[dict | None, dict | None]]:
    """Yield ``(row, None)`` per convertible entry of the split, or ``(None, reject)`` with a
    reason when an entry cannot be converted."""
    if entries is None:
        entries = select_entries(categories, split, held_out_percent, limit)
    for e in entries:
        try:
            yield entry_to_trajectory(e, step_mode, held_out_percent), None
        except Exception as ex:  # a broken entry is quarantined, not fatal
            yield None, reject("ingest", f"bfcl:{e['id']}", "bfcl_conversion_failed", f"{type(ex).__name__}: {ex}")


@lru_cache(maxsize=8)
def _test_entries(category: str) -> tuple[dict, ...]:
    from bfcl_eval.utils import load_dataset_entry

    truth = {e["id"]: e for e in _load(category)}
    out = []
    for e in load_dataset_entry(f"multi_turn_{category}"):
        t = truth[e["id"]]
        out.append({**e, "category": category, "ground_truth": t["ground_truth"], "missed_names": t["missed_function"]})
    return tuple(out)


def eval_entries(category: str, split: str | None = "held_out", held_out_percent: int = 50) -> list[dict]:
    """Entries exactly as bfcl-eval's runner prepares them for inference: ``function`` holds the
    docs available at turn 0 (with BFCL's Python-syntax hint; miss_func's withheld functions
    removed) and ``missed_function`` maps a turn index to the docs that turn adds. The ground
    truth is merged in. ``split`` picks a side of our train/held-out split (``None``: all)."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown BFCL multi-turn category {category!r}; choose from {CATEGORIES}")
    return [json.loads(json.dumps(e)) for e in _test_entries(category)
            if split is None or split_of(e["id"], held_out_percent) == split]
