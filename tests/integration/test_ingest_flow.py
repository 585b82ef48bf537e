"""The ingest flow on a real (temporary) Prefect server, the catalog over its output, and the CLI."""

import json

import pytest
from typer.testing import CliRunner

from progra_core.config import load_config
from progra_core.data import ingest as core

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture()
def counted(monkeypatch):
    calls = []
    real = core.ingest

    def wrapper(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(core, "ingest", wrapper)
    return calls


def _jsonl(tmp_path):
    good = {"id": "g1", "messages": [{"role": "user", "content": "list"},
                                     {"role": "assistant", "tool_calls": [{"function": {"name": "ls", "arguments": "{}"}}]},
                                     {"role": "tool", "content": "a.txt"}]}
    p = tmp_path / "extra.jsonl"
    p.write_bytes(b"\n".join([json.dumps(good).encode(), b"{broken", json.dumps({**good, "id": "g2"}).encode(),
                              json.dumps({**good, "id": "g1"}).encode(), b"\xff\xfe\xfd"]))
    return p


def test_ingest_flow_cached_by_fingerprint(tmp_path, counted):
    from flows.ingest import ingest_flow
    from storage import Catalog

    root = str(tmp_path / "root")
    cfg = load_config("embedded", overrides=[f"storage.root={root}", "ingest.limit=5", f"ingest.jsonl=[{_jsonl(tmp_path)}]"])
    ref = ingest_flow(cfg)
    assert ref.rows == 7 and ref.rejects == 3 and len(counted) == 1
    cat = Catalog(root)
    assert cat.sql("select count(*) n from trajectories").column("n")[0].as_py() == 7
    rows = cat.sql("select source, count(*) c from trajectories group by 1 order by 1").to_pylist()
    by_source = {r["source"]: r["c"] for r in rows}
    assert by_source == {"bfcl": 5, "jsonl": 2}
    reasons = sorted(cat.sql("select reason from rejects").column(0).to_pylist())
    assert reasons == ["duplicate_id", "invalid_json", "not_utf8"]
    assert cat.sql("select split from trajectories where source='bfcl'").column(0).to_pylist() == ["train"] * 5

    again = ingest_flow(cfg)  # unchanged config: the same dataset, no work
    assert again.dataset_id == ref.dataset_id and len(counted) == 1
    changed = ingest_flow(load_config("embedded", overrides=[f"storage.root={root}", "ingest.limit=3"]))
    assert changed.dataset_id != ref.dataset_id and changed.rows == 3 and len(counted) == 2
    assert cat.sql("select count(*) from datasets where stage='trajectories'").column(0)[0].as_py() == 2
    assert cat.sql("select count(*) from trajectories_latest").column(0)[0].as_py() == 3


def test_cli_run_datasets_and_sql(tmp_path):
    from flows.cli import app

    root = str(tmp_path / "cli")
    runner = CliRunner()
    r = runner.invoke(app, ["run", "--through", "ingest", "--set", "ingest.limit=4", "--set", f"storage.root={root}"])
    assert r.exit_code == 0, r.output
    assert "4 rows" in r.output
    r = runner.invoke(app, ["sql", "select count(*) as n from trajectories", "--root", root, "--format", "json"])
    assert r.exit_code == 0 and json.loads(r.output) == [{"n": 4}]
    r = runner.invoke(app, ["sql", "select trajectory_id, n_turns from trajectories order by 1", "--root", root, "-f", "csv"])
    assert r.exit_code == 0 and r.output.splitlines()[0] == '"trajectory_id","n_turns"' and len(r.output.splitlines()) == 5
    r = runner.invoke(app, ["sql", "select trajectory_id, turns from trajectories", "--root", root, "-f", "csv"])
    assert r.exit_code == 0 and "query" in r.output  # nested columns JSON-encoded for CSV
    out = tmp_path / "t.parquet"
    r = runner.invoke(app, ["sql", "select * from trajectories", "--root", root, "-f", "parquet", "-o", str(out)])
    import pyarrow.parquet as pq

    assert r.exit_code == 0 and pq.read_table(out).num_rows == 4
    r = runner.invoke(app, ["sql", "select count(*) from trajectories", "--root", root])
    assert r.exit_code == 0 and "4" in r.output
    r = runner.invoke(app, ["sql", "select * from no_such_view", "--root", root])
    assert r.exit_code == 1 and "SQL error" in r.output
    # what a user sees is true (#43): our views suggested, not DuckDB's internal tables; a syntax
    # error is an error in the query like a wrong name (rc 1), a refusal is policy (rc 2)
    r = runner.invoke(app, ["sql", "select * from trajectoris", "--root", root])
    assert r.exit_code == 1 and "did you mean trajectories" in " ".join(r.output.split()) and "pg_tables" not in r.output
    r = runner.invoke(app, ["sql", "selec * from trajectories", "--root", root])
    assert r.exit_code == 1 and "SQL error" in r.output, r.output
    r = runner.invoke(app, ["sql", "delete from trajectories", "--root", root])
    assert r.exit_code == 2 and "refused" in r.output
    # a root that does not exist is an error naming it, on every reading command; --root on run and stage
    missing = str(tmp_path / "nowhere")
    for argv in (["datasets"], ["sql", "select 1"], ["report"], ["export", "trajectories", str(tmp_path / "x.parquet")],
                 ["stage", "segment", "-i", "abc"]):
        r = runner.invoke(app, [*argv, "--root", missing])
        assert r.exit_code == 2 and "no storage root at" in " ".join(r.output.split()) and "nowhere" in r.output, (argv, r.output)
    r = runner.invoke(app, ["datasets", "awarenes", "--root", root])
    assert r.exit_code == 2 and "did you mean 'awareness'" in " ".join(r.output.split()), r.output
    r = runner.invoke(app, ["datasets", "awareness", "--root", root])  # a known kind with no dataset yet: empty, fine
    assert r.exit_code == 0
    r = runner.invoke(app, ["run", "--through", "ingest", "--set", "ingest.limit=2", "--root", str(tmp_path / "cli2")])
    assert r.exit_code == 0 and (tmp_path / "cli2" / "datasets" / "trajectories").is_dir(), r.output
    r = runner.invoke(app, ["datasets", "--root", root])
    assert r.exit_code == 0 and "trajectories" in r.output
    r = runner.invoke(app, ["run", "--profile", "nope"])
    assert r.exit_code == 2
