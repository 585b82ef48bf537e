"""Hand a dataset to other tools: Parquet, JSON Lines, or a Hugging Face ``datasets`` folder
(``Dataset.save_to_disk``), optionally pushed to the Hub.

datasets is imported inside the functions that use it: heavy, and only some callers need it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["FORMATS", "export_table", "push_to_hub", "split_names"]

FORMATS = ("parquet", "jsonl", "hf")


def export_table(table: pa.Table, path: str | os.PathLike, fmt: str, card: str | None = None) -> str:
    """Write ``table`` to ``path`` as ``fmt``; returns the path written. ``hf``: a ``split`` column
    becomes the folder's splits, and ``card`` its ``README.md``."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {FORMATS}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, path, compression="zstd")
    elif fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for batch in table.to_batches(max_chunksize=4096):
                for row in batch.to_pylist():
                    f.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")
    else:
        _hf(table).save_to_disk(str(path))
        if card is not None:
            (path / "README.md").write_text(card, encoding="utf-8")
    return str(path)


def push_to_hub(table: pa.Table, repo_id: str, token_env: str = "HF_TOKEN", private: bool = True,
                card: str | None = None) -> str:
    """Push to the Hugging Face Hub with the token in ``token_env`` (never passed on the command line),
    the card as the repository's README."""
    token = os.environ.get(token_env)
    if not token:
        raise RuntimeError(f"--push-to-hub needs a Hugging Face token in ${token_env}")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise RuntimeError("--push-to-hub needs the network, but HF_HUB_OFFLINE=1 is set")
    _hf(table).push_to_hub(repo_id, token=token, private=private)
    if card is not None:
        from huggingface_hub import DatasetCard

        DatasetCard(card).push_to_hub(repo_id, token=token, repo_type="dataset")
    return f"https://huggingface.co/datasets/{repo_id}"


def split_names(table: pa.Table) -> list[str]:
    """The HF splits ``table`` exports as: the values of its ``split`` column when every row has
    one, else none (one unnamed split)."""
    if "split" not in table.column_names or table.num_rows == 0 or table.column("split").null_count:
        return []
    return sorted(set(table.column("split").to_pylist()))


def _hf(table: pa.Table):
    """A ``Dataset``, or a ``DatasetDict`` with one split per value of a ``split`` column."""
    import pyarrow.compute as pc
    from datasets import Dataset, DatasetDict

    names = split_names(table)
    if not names:
        return Dataset(table)
    rest = table.drop_columns(["split"])
    return DatasetDict({n: Dataset(rest.filter(pc.equal(table.column("split"), n))) for n in names})
