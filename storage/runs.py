"""Run records under a store's root: ``<root>/runs/<flow_run_id>.json``, how a stage run on a work
pool hands the ids of what it wrote (or found cached) back to the parent on another machine."""

from __future__ import annotations

import json
import posixpath

from storage.errors import DatasetNotFound

__all__ = ["RunRecords"]


class RunRecords:
    """Run records of a :class:`~storage.store.DatasetStore` (uses its ``fs``, ``_join``,
    ``root_url`` and ``_put_atomic``)."""

    def write_run_outputs(self, flow_run_id: str, outputs: dict[str, str]) -> None:
        """Record which datasets a flow run produced or found cached (``runs/<id>.json``), so
        a parent on another machine reads them from the shared root, not from Prefect results."""
        d = self._join("runs")
        self._put_atomic(posixpath.join(d, f"{flow_run_id}.json"), json.dumps(outputs).encode())

    def read_run_outputs(self, flow_run_id: str) -> dict[str, str]:
        try:
            with self.fs.open(self._join("runs", f"{flow_run_id}.json"), "r") as f:
                return json.load(f)
        except FileNotFoundError:
            raise DatasetNotFound(f"no outputs recorded for flow run {flow_run_id} under {self.root_url}/runs") from None

