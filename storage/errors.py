"""What the store raises: kept apart so every part of the store (datasets, run records) names the
same exceptions without importing the store."""

from __future__ import annotations

__all__ = ["CorruptManifest", "CorruptDataset", "DatasetNotFound"]


class CorruptManifest(ValueError):
    """A dataset's ``_manifest.json`` cannot be read: the error names the dataset; listings skip it
    (and say so) so every other dataset stays queryable."""


class CorruptDataset(ValueError):
    """A part's bytes are not the bytes its manifest recorded (a flipped bit, a truncated upload, a
    file replaced in place): the dataset is never read or served by a view until it is rewritten."""


class DatasetNotFound(KeyError):
    """No dataset (or run record) with that id under the root."""
