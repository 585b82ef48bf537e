"""Parquet dataset store and DuckDB catalog (Prefect-free)."""

from storage.catalog import Catalog, SQLRefused
from storage.store import (
    CALLS,
    CorruptDataset,
    CorruptManifest,
    DatasetNotFound,
    DatasetRef,
    DatasetStore,
    ShardIO,
    fingerprint,
)

__all__ = ["CALLS", "Catalog", "SQLRefused", "CorruptDataset", "CorruptManifest", "DatasetNotFound", "DatasetRef", "DatasetStore", "ShardIO", "fingerprint"]
