"""The notebook example's trajectories (examples/notebook/*.jsonl, env ``notebook``) under another
env name, so one test can run the class and the MCP server side by side."""

from __future__ import annotations

import json
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "notebook"
CONFIG = {"owner": "Ann Lee", "notes": {"groceries": "milk and eggs"}}
SEEDS = [CONFIG, {"owner": "Raj Patel", "notes": {"work": "send the weekly report"}}]


def write(folder: Path, env: str) -> tuple[Path, Path]:
    """(train.jsonl, held_out.jsonl) of the example, their records naming ``env``."""
    out = []
    for name in ("train.jsonl", "held_out.jsonl"):
        records = [json.loads(line) for line in (EXAMPLE / name).read_text().splitlines() if line.strip()]
        path = folder / name
        path.write_text("".join(json.dumps({**r, "env": env}) + "\n" for r in records))
        out.append(path)
    return out[0], out[1]
