"""Parquet dataset store and DuckDB catalog (Prefect-free)."""

from storage.catalog import Catalog, SQLRefused
from storage.store import CorruptManifest, DatasetNotFound, DatasetRef, DatasetStore, ShardIO, fingerprint

__all__ = ["Catalog", "SQLRefused", "CorruptManifest", "DatasetNotFound", "DatasetRef", "DatasetStore", "ShardIO", "fingerprint"]
