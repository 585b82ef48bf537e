"""Parquet dataset store and DuckDB catalog (Prefect-free)."""

from storage.catalog import Catalog, SQLRefused
from storage.store import (
    CorruptDataset,
    CorruptManifest,
    DatasetNotFound,
    DatasetRef,
    DatasetStore,
    ShardIO,
    fingerprint,
)

__all__ = ["Catalog", "SQLRefused", "CorruptDataset", "CorruptManifest", "DatasetNotFound", "DatasetRef", "DatasetStore", "ShardIO", "fingerprint"]
