"""Our own hostile-input corpus, one list per class of issue "Hostile input and runaway work"
(the held-out probe's corpus is kept apart). Each case is (label, thunk, expect): ``thunk()``
does the hostile thing through the public entry point and returns what came back; ``expect(out)``
is True when that is a clear refusal / error / verdict and nothing was altered. The harness
(:func:`run_class`) counts per class: tried, executed something (a canary file appeared), hung
(past a deadline), crashed (an exception that is not a documented error type), silently changed
(``expect`` False)."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

CANARY = Path("/tmp/progra-hostile-canary")


@dataclass
class Tally:
    tried: int = 0
    executed: int = 0
    hung: int = 0
    crashed: int = 0
    changed: int = 0
    failures: list[str] = field(default_factory=list)

    def row(self) -> dict:
        return {"tried": self.tried, "executed": self.executed, "hung": self.hung, "crashed": self.crashed,
                "silently_changed": self.changed}


def run_class(cases, allowed: tuple[type[BaseException], ...] = (), deadline_s: float = 20.0) -> Tally:
    """Run each case in a thread with a deadline; exceptions of ``allowed`` types are documented
    refusals and go to ``expect`` as the outcome."""
    t = Tally()
    for label, thunk, expect in cases:
        t.tried += 1
        CANARY.unlink(missing_ok=True)
        box: dict = {}

        def go(box=box, thunk=thunk):
            try:
                box["out"] = thunk()
            except allowed as e:
                box["out"] = e
            except BaseException as e:  # noqa: BLE001 - a crash is what we count
                box["crash"] = e

        th = threading.Thread(target=go, daemon=True)
        th.start()
        th.join(deadline_s)
        if th.is_alive():
            t.hung += 1
            t.failures.append(f"hung: {label}")
        elif "crash" in box:
            t.crashed += 1
            t.failures.append(f"crashed: {label}: {type(box['crash']).__name__}: {box['crash']}")
        elif not expect(box["out"]):
            t.changed += 1
            t.failures.append(f"silently changed: {label}: {str(box['out'])[:200]}")
        if CANARY.exists():
            t.executed += 1
            t.failures.append(f"executed: {label}")
    return t


# -- shared record builders ---------------------------------------------------------------------

TOOLS = [{"type": "function", "function": {"name": "ls", "parameters": {"type": "object", "properties": {}}}},
         {"type": "function", "function": {"name": "cd", "parameters": {"type": "object", "properties": {"folder": {"type": "string"}}}}}]


def chat(i: str, **kw) -> dict:
    rec = {"id": i, "tools": TOOLS, "messages": [
        {"role": "user", "content": "Go to docs and list."},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "cd", "arguments": "{\"folder\": \"docs\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        {"role": "assistant", "content": "Done."}]}
    rec.update(kw)
    return rec


def with_messages(i: str, *extra: dict, replace: dict | None = None) -> dict:
    rec = chat(i)
    if replace:
        for k, v in replace.items():
            rec["messages"][k] = v
    rec["messages"] += list(extra)
    return rec


def args_line(i: str, arguments: str) -> bytes:
    """A chat record whose one call has these raw arguments (JSON text, written verbatim)."""
    head = json.dumps(chat(i))
    return head.replace(json.dumps("{\"folder\": \"docs\"}"), json.dumps(arguments)).encode()


def bfcl_record(i: str, calls: list[str], classes=("MathAPI",), config=None, **kw) -> dict:
    rec = {"id": i, "question": [[{"role": "user", "content": "Please compute it."}]], "ground_truth": [calls],
           "involved_classes": list(classes)}
    if config is not None:
        rec["initial_config"] = config
    rec.update(kw)
    return rec


def all_ids_message_config() -> dict:
    """A MessageAPI scenario where every id its generator can draw is taken: send_message loops forever."""
    return {"MessageAPI": {"generated_ids": list(range(10000, 100000)), "user_count": 2, "current_user": "USR001",
                           "user_map": {"Alice": "USR001", "Bob": "USR002"}, "inbox": [], "message_count": 0}}


TALLIES: dict[str, dict] = {}


def report(name: str, t: Tally) -> None:
    """Record a class's tally (``PROGRA_HOSTILE_REPORT`` names a JSON file for all of them) and
    assert it: every case tried, none executed, hung, crashed or silently changed."""
    TALLIES[name] = t.row()
    if path := os.environ.get("PROGRA_HOSTILE_REPORT"):
        Path(path).write_text(json.dumps(TALLIES, indent=1))
    print(f"\n{name}: {t.row()}")
    assert t.failures == [], t.failures
    assert t.executed == t.hung == t.crashed == t.changed == 0 and t.tried > 0
