"""Parquet dataset store and DuckDB catalog (Prefect-free)."""

from storage.catalog import Catalog
from storage.store import DatasetNotFound, DatasetRef, DatasetStore, ShardIO, fingerprint

__all__ = ["Catalog", "DatasetNotFound", "DatasetRef", "DatasetStore", "ShardIO", "fingerprint"]
