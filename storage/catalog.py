"""The DuckDB catalog: one view per stage over all its datasets, ``<stage>_latest`` over the newest,
the ``datasets`` lineage table, the ``rejects`` view and ``eval_summary`` (Table 1 in SQL).

Views are rebuilt from the manifests on every query (a directory listing: cheap; only the views the
query names) in an in-memory DuckDB, so concurrent readers never fight over a lock and a dataset
appears the moment its manifest is renamed into place. ``refresh()`` also writes the same views into
``<root>/catalog.duckdb`` so any DuckDB client can open it directly.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading

import duckdb
import pyarrow as pa

from progra_core.schemas import DATASETS, REJECTS
from storage.store import CALLS, DatasetRef, DatasetStore

__all__ = ["Catalog", "DATASETS_SCHEMA", "SQLRefused", "check_filter"]

DATASETS_SCHEMA = pa.schema(
    [
        ("dataset_id", pa.string()),
        ("stage", pa.string()),
        ("parents", pa.list_(pa.string())),
        ("config", pa.string()),
        ("code_version", pa.string()),
        ("rows", pa.int64()),
        ("bytes", pa.int64()),
        ("rejects", pa.int64()),
        ("path", pa.string()),
        ("flow_run_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("stats", pa.string()),
    ]
)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: root -> (in-memory DuckDB, what its views were built from); see ``Catalog.sql``.
_SHARED: dict[str, tuple[duckdb.DuckDBPyConnection, dict[str, object]]] = {}
_SHARED_LOCK = threading.Lock()
#: One row per evaluation dataset x model x category: accuracy (trials pooled = averaged when every
#: entry has all trials), per-turn accuracy, where runs fail, and how runs ended.
EVAL_SUMMARY_SQL = """
CREATE VIEW eval_summary AS
SELECT dataset_id AS eval_id, model_ref, method, prompt, benchmark, category,
       count(*) AS runs, count(DISTINCT entry_id) AS entries, count(DISTINCT trial) AS trials,
       round(100 * avg(passed::DOUBLE), 2) AS accuracy,
       round(100 * sum(list_sum(turn_passed::INTEGER[]))::DOUBLE / nullif(sum(list_count(turn_passed)), 0), 2) AS turn_accuracy,
       sum(list_count(turn_passed)) AS checked_turns,
       round(avg(first_failed_turn), 2) AS mean_first_failed_turn,
       round(avg(n_steps), 2) AS steps_per_run,
       count(*) FILTER (WHERE error_type = 'multi_turn:inference_error') AS inference_errors,
       count(*) FILTER (WHERE error_type = 'multi_turn:force_terminated') AS force_terminated,
       round(100 * avg(valid_call::DOUBLE), 2) AS valid_rate,
       round(100 * avg(right_function::DOUBLE), 2) AS function_rate,
       max(created_at) AS created_at
FROM eval_results GROUP BY ALL
"""


def _drop(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop ``name`` whether it is a view or a table (a persisted catalog may hold either)."""
    kind = con.execute(
        "select 'VIEW' from duckdb_views() where view_name = ? and not internal "
        "union all select 'TABLE' from duckdb_tables() where table_name = ?", [name, name]).fetchone()
    if kind:
        con.execute(f"DROP {kind[0]} {name}")


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class SQLRefused(ValueError):
    """A user query that is not one read-only SELECT."""


_FILTER_TARGET = "_progra_filter_target"


def _parsed(query: str) -> dict:
    """DuckDB's own parse tree of ``query`` (``json_serialize_sql``), positions dropped."""
    con = duckdb.connect()
    try:
        tree = json.loads(con.execute("select json_serialize_sql(?)", [query]).fetchone()[0])
    finally:
        con.close()
    if tree.get("error"):
        raise SQLRefused(f"not valid SQL: {tree.get('error_message')}")

    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k != "query_location"}
        return [strip(x) for x in v] if isinstance(v, list) else v
    return strip(tree)


def _our_suggestion(message: str) -> str:
    """DuckDB's catalog error with its "Did you mean" drawn from our views only (it suggested
    ``pg_tables`` for a misspelt ``awarenes``)."""
    head = message.split("\nDid you mean")[0].rstrip().rstrip("!")
    m = re.search(r"with name (\w+) does not exist", head)
    if not m:
        return head
    views = sorted({*DATASETS, *(f"{n}_latest" for n in DATASETS), "datasets", "rejects", "eval_summary"})
    close = difflib.get_close_matches(m.group(1).lower(), views, n=3)
    return head + (f"; did you mean {', '.join(close)}?" if close else "") + \
        f" Views: {', '.join(v for v in views if not v.endswith('_latest'))} (each also as <name>_latest)"


def check_filter(where: str) -> None:
    """``SQLRefused`` unless ``where`` is one filter expression: placed in ``select * from t where
    (...)`` it must parse (DuckDB's own parser) into that very query plus a WHERE clause that reads
    no other relation (no subquery). Quoting of any kind, comments and parentheses are the
    parser's business, not string rules'."""
    tree = _parsed(f"SELECT * FROM {_FILTER_TARGET} WHERE ({where})")
    bare = _parsed(f"SELECT * FROM {_FILTER_TARGET}")
    if len(tree["statements"]) != 1:
        raise SQLRefused(f"one filter expression, got {len(tree['statements'])} statements")
    node = dict(tree["statements"][0]["node"])
    clause = node.pop("where_clause", None)
    base = dict(bare["statements"][0]["node"])
    base.pop("where_clause", None)
    if node != base or clause is None:
        raise SQLRefused("the filter reaches outside its WHERE clause")

    def walk(v) -> None:
        if isinstance(v, dict):
            if v.get("class") == "SUBQUERY" or "subquery" in v:
                raise SQLRefused("a filter reads no other relation (no subquery)")
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(clause)


class Catalog:
    def __init__(self, root: str | os.PathLike, db_path: str | None = None):
        self.store = DatasetStore(root)
        if db_path is None and self.store.is_local:
            db_path = os.path.join(self.store._root, "catalog.duckdb")
        self.db_path = db_path

    # -- building ----------------------------------------------------------------------------

    def _lineage(self, refs: list[DatasetRef]) -> pa.Table:
        rows = [
            {
                "dataset_id": r.dataset_id,
                "stage": r.stage,
                "parents": list(r.parents),
                "config": json.dumps(r.config, sort_keys=True, default=str),
                "code_version": r.code_version,
                "rows": r.rows,
                "bytes": r.bytes,
                "rejects": r.rejects,
                "path": r.path,
                "flow_run_id": r.flow_run_id,
                "created_at": pa.scalar(r.created_at).cast(pa.timestamp("us", tz="UTC")).as_py() if r.created_at else None,
                "stats": json.dumps(r.stats, default=str),
            }
            for r in refs
        ]
        return pa.Table.from_pylist(rows, schema=DATASETS_SCHEMA)

    def _statements(self, con: duckdb.DuckDBPyConnection, only: set[str] | None = None,
                    built: dict[str, object] | None = None) -> None:
        """Create the views (``only``: just these names, e.g. those a query mentions; ``built``:
        what this connection already holds, name -> the datasets it was built from, so unchanged
        views are kept)."""
        store = self.store
        refs = [r for r in store.list() if store.intact(r)]  # a part that is not what was written is never served
        by_stage: dict[str, list[DatasetRef]] = {}
        for r in refs:
            by_stage.setdefault(r.stage, []).append(r)

        def want(*names: str) -> bool:
            if only is not None and not any(n in only for n in names):
                return False
            if built is None:
                return True
            # datasets are immutable once committed: the same ids mean the same view
            key = tuple((r.stage, r.dataset_id) for r in (refs if names[0] in ("datasets", "rejects", "eval_summary")
                                                           else by_stage.get(names[0], [])))
            if built.get(names[0]) == key:
                return False
            built[names[0]] = key
            return True

        if want("datasets"):
            con.register("_progra_datasets", self._lineage(refs))
            _drop(con, "datasets")
            con.execute("CREATE TABLE datasets AS SELECT * FROM _progra_datasets")
            con.unregister("_progra_datasets")
        known = DATASETS
        for stage in sorted(set(by_stage) | set(known)):
            if not _IDENT.match(stage) or not want(stage, f"{stage}_latest"):
                continue
            stage_refs = by_stage.get(stage, [])
            files = [f for r in stage_refs for f in store.files(r)]
            if not files:
                schema = known.get(stage)
                if schema is None:
                    continue
                empty = schema.append(pa.field("dataset_id", pa.string())).empty_table()
                con.register("_progra_empty", empty)
                for name in (stage, f"{stage}_latest"):
                    _drop(con, name)
                    con.execute(f"CREATE TABLE {name} AS SELECT * FROM _progra_empty")
                con.unregister("_progra_empty")
                continue
            latest = stage_refs[-1]
            # Datasets written before a column was added lack it: a union with the current schema's
            # empty table gives every view today's columns (NULL in the older rows), so the SQL
            # over them (eval_summary, the docs' queries) keeps working on an old storage root.
            tail = ""
            if stage in known:
                shape = f"_progra_schema_{stage}"
                con.register("_progra_empty", known[stage].append(pa.field("dataset_id", pa.string())).empty_table())
                con.execute(f"CREATE OR REPLACE TABLE {shape} AS SELECT * FROM _progra_empty")
                con.unregister("_progra_empty")
                tail = f" UNION ALL BY NAME SELECT * FROM {shape}"
            for name, fl in ((stage, files), (f"{stage}_latest", store.files(latest))):
                urls = ", ".join(_q(store.url(f)) for f in fl)
                _drop(con, name)
                con.execute(
                    f"CREATE VIEW {name} AS SELECT * EXCLUDE (filename), "
                    f"regexp_extract(filename, '/datasets/{stage}/([^/]+)/part-', 1) AS dataset_id "
                    f"FROM read_parquet([{urls}], union_by_name=true, filename=true){tail}"
                )
        if want("eval_summary"):
            _drop(con, "eval_summary")
            con.execute(EVAL_SUMMARY_SQL)
        if not want("rejects"):
            return
        rej = [store.rejects_file(r) for r in refs]
        rej = [f for f in rej if f]
        _drop(con, "rejects")
        if rej:
            urls = ", ".join(_q(store.url(f)) for f in rej)
            con.execute(
                "CREATE VIEW rejects AS SELECT * EXCLUDE (filename), "
                "regexp_extract(filename, '/datasets/[^/]+/([^/]+)/rejects[^/]*[.]parquet$', 1) AS dataset_id "
                f"FROM read_parquet([{urls}], union_by_name=true, filename=true)"
            )
        else:
            con.register("_progra_rej", REJECTS.append(pa.field("dataset_id", pa.string())).empty_table())
            con.execute("CREATE TABLE rejects AS SELECT * FROM _progra_rej")
            con.unregister("_progra_rej")

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A new in-memory DuckDB connection with every view in place (yours to keep and close)."""
        con = duckdb.connect()
        if not self.store.is_local:
            con.register_filesystem(self.store.fs)
        self._statements(con)
        return con

    # -- querying ----------------------------------------------------------------------------

    def sql(self, query: str, params: list | None = None) -> pa.Table:
        """Run SQL over the catalog and return an Arrow table. Only the views the query names are
        built, on one in-memory DuckDB per root and process that keeps views whose datasets did not
        change, so a query costs what DuckDB's own read_parquet does. Each query runs on its own
        cursor (safe across threads)."""
        names = set(re.findall(r"[a-z_][a-z0-9_]*", query.lower()))
        if "eval_summary" in names:
            names.add("eval_results")
        with _SHARED_LOCK:
            if self.store.root_url not in _SHARED:
                db = duckdb.connect()
                if not self.store.is_local:
                    db.register_filesystem(self.store.fs)
                _SHARED[self.store.root_url] = (db, {})
            db, built = _SHARED[self.store.root_url]
            self._statements(db, names, built=built)
            cur = db.cursor()
        try:
            rel = cur.sql(query, params=params) if params else cur.sql(query)
            return rel.to_arrow_table() if rel is not None else pa.table({})
        finally:
            cur.close()

    def user_sql(self, query: str, table: pa.Table | None = None) -> pa.Table:
        """Untrusted SQL (``progra sql``, ``export --where``): exactly one SELECT (or EXPLAIN)
        statement, run on its own connection whose views are built first and which then has
        external access off (a local root: only its ``datasets/`` folder readable), its
        configuration locked, so a query can read the committed data and nothing else, and write
        nothing (no COPY, ATTACH, INSTALL, CREATE, SET). ``table``: queried as ``dataset``."""
        con = duckdb.connect()
        spill = tempfile.mkdtemp(prefix="progra-sql-")
        try:
            statements = con.extract_statements(query)  # a syntax error is an error in the query, as a wrong name is
            if len(statements) != 1:
                raise SQLRefused(f"one statement at a time, got {len(statements)}")
            kind = statements[0].type
            if kind not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
                raise SQLRefused(f"only SELECT queries run here (read-only), got {kind.name}")
            if table is not None:
                con.register("dataset", table)
            else:
                if not self.store.is_local:
                    con.register_filesystem(self.store.fs)
                names = set(re.findall(r"[a-z_][a-z0-9_]*", query.lower()))
                self._statements(con, names | ({"eval_results"} if "eval_summary" in names else set()))
            # DuckDB may always read its own spill folder (``.tmp`` under the working directory by
            # default): give it a private, empty one that goes away with the query
            con.execute("SET temp_directory = ?", [spill])
            if self.store.is_local:
                data = os.path.join(self.store.root_url, "datasets") + os.sep
                con.execute("SET allowed_directories = ?", [[data]])
                con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            try:
                rel = con.sql(query)
            except duckdb.CatalogException as e:
                raise duckdb.CatalogException(_our_suggestion(str(e))) from None
            return rel.to_arrow_table() if rel is not None else pa.table({})
        finally:
            con.close()
            shutil.rmtree(spill, ignore_errors=True)

    def eval_summary(self, eval_ids: list[str]) -> list[dict]:
        """``eval_summary`` rows of these evaluation datasets, in the given order (then by category)."""
        if not eval_ids:
            return []
        marks = ", ".join("?" for _ in eval_ids)
        rows = self.sql(f"select * from eval_summary where eval_id in ({marks})", list(eval_ids)).to_pylist()
        order = {e: i for i, e in enumerate(eval_ids)}
        return sorted(rows, key=lambda r: (order[r["eval_id"]], r["category"]))

    def refresh(self) -> str | None:
        """Persist the views into the DuckDB file (local roots only); returns its path, or None
        when it is busy (another process holds the write lock) or the root is remote. A file that
        already holds the current set of datasets is left alone (a cached rerun writes nothing)."""
        CALLS["catalog.refresh"] += 1
        if not self.db_path:
            return None

        refs = [r for r in self.store.list() if self.store.intact(r)]
        signature = hashlib.sha256("\n".join(f"{r.stage}/{r.dataset_id}/{r.created_at}" for r in refs).encode()).hexdigest()
        try:
            con = duckdb.connect(self.db_path)
        except duckdb.IOException:
            return None
        try:
            try:
                if con.execute("select signature from _progra_catalog").fetchone() == (signature,):
                    return self.db_path
            except duckdb.CatalogException:
                pass
            self._statements(con)
            CALLS["catalog.write"] += 1
            con.execute("CREATE OR REPLACE TABLE _progra_catalog AS SELECT ? AS signature", [signature])
        finally:
            con.close()
        return self.db_path
