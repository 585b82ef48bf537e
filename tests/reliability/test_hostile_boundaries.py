"""Hostile input, classes 5-8 of the issue: comparisons and parsing, secrets, read-only SQL,
config input; each over our own corpus, its tally asserted by ``H.report``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from progra_core.calls import CallParseError, format_calls, normalize_calls, parse_calls, schema_equal
from progra_core.config import ConfigInputError, load_config
from tests.reliability import hostile as H

# -- 5. comparisons always give a verdict; parsing linear and capped first ---------------------------

BIG = "9" * 400
COMPARE = [
    ("400-digit ints equal", f"[f(a={BIG})]", f"[f(a={BIG})]", True),
    ("400-digit int vs float", f"[f(a={BIG})]", "[f(a=1e308)]", False),
    ("2**53+1 vs 2**53", "[f(a=9007199254740993)]", "[f(a=9007199254740992)]", False),
    ("2**53+1 vs 2.0**53", "[f(a=9007199254740993)]", "[f(a=9007199254740992.0)]", False),
    ("1 vs 1.0", "[f(a=1)]", "[f(a=1.0)]", True),
    ("-0.0 vs 0.0 in a multiset", "[f(a=[0.0, -0.0, 1])]", "[f(a=[1, -0.0, 0])]", True),
    ("-0.0 order", "[f(a=[-0.0, 0.5]), g()]", "[g(), f(a=[0.5, 0.0])]", True),
    ("True vs 1", "[f(a=True)]", "[f(a=1)]", False),
    ("long hex literal", "[f(a=0x" + "f" * 5000 + ")]", "[f(a=1)]", False),
    ("1000-bit hex equal", "[f(a=0x" + "f" * 250 + ")]", "[f(a=0x" + "f" * 250 + ")]", True),
    ("nan name", "[f(a=nan)]", "[f(a=nan)]", False),
    ("1e999 literal", "[f(a=1e999)]", "[f(a=1e999)]", False),
]


def test_every_comparison_returns_a_verdict():
    cases = [(label, lambda a=a, b=b: (schema_equal(a, b), schema_equal(b, a)), lambda v, want=want: v == (want, want))
             for label, a, b, want in COMPARE]
    for label, a, _, _ in COMPARE:  # format and hash what parses: no exception
        def fmt(a=a):
            try:
                calls = parse_calls(a)
            except CallParseError as e:
                return e
            return parse_calls(format_calls(calls)) == calls and hash(calls[0]) == hash(parse_calls(format_calls(calls))[0])
        cases.append((f"format+hash: {label}", fmt, lambda v: v is True or isinstance(v, CallParseError)))
    # linear and capped first: adversarial texts at the cap's size finish well inside the deadline
    from progra_core.data.awareness import AwarenessParseError, parse_awareness
    from progra_core.data.verify import extract_call_text
    from progra_core.prompts.policy import parse_action

    n = 60_000
    texts = {"fence + spaces": "```" + " " * n + "x", "fence + newlines": "```python" + "\n " * (n // 2), "blank lines": " \n" * n + "x",
             "summary tags": "<summary>" * (n // 9), "call brackets": "[a(" * (n // 3), "close parens": "[a(" + ")" * n,
             "over the cap": "[f(a='" + "x" * 300_000 + "')]"}
    for name, text in texts.items():
        for fn in (parse_calls, parse_action, extract_call_text, parse_awareness, lambda t: normalize_calls(t)):
            def go(fn=fn, text=text):
                try:
                    fn(text)
                except (CallParseError, AwarenessParseError):
                    pass
                return True
            cases.append((f"{name}: {getattr(fn, '__name__', 'normalize_calls')}", go, bool))
    H.report("5 comparison and parsing", H.run_class(cases, deadline_s=3.0))


# -- 6. secrets: see test_secrets.py for the end-to-end run; here the hostile combinations ------------

def test_no_run_parameter_redirects_a_key(monkeypatch):
    from tasks.runtime import KeyNotAllowed, key_env

    monkeypatch.setenv("PROGRA_KEY_ENVS", "PROGRA_TEST_KEY@127.0.0.1:8000|llm.internal, secret:team-key@llm.internal:443")
    monkeypatch.setenv("PROGRA_TEST_KEY", "sk-test")
    hostile = [("PROGRA_TEST_KEY", None, "http://127.0.0.1:8001/v1"), ("PROGRA_TEST_KEY", None, "http://llm.internal.evil.com/v1"),
               ("PROGRA_TEST_KEY", None, "http://evil.com/?x=llm.internal"), ("PROGRA_TEST_KEY", None, "http://llm.internal@evil.com/"),
               ("PROGRA_TEST_KEY", None, "http://evil.com#llm.internal"), ("HOME", None, None), ("PATH", None, "http://127.0.0.1:8000"),
               ("AWS_SECRET_ACCESS_KEY", None, None), ("OPENAI_API_KEY", None, None), (None, "team-key", "http://llm.internal:444"),
               (None, "other-block", "http://llm.internal:443"), ("PROGRA_TEST_KEY", None, "file:///etc/passwd")]
    cases = [(f"{e or 'secret:' + s} -> {b}", lambda e=e, s=s, b=b: key_env(e, s, b), lambda v: isinstance(v, KeyNotAllowed))
             for e, s, b in hostile]
    cases.append(("the bound host works", lambda: key_env("PROGRA_TEST_KEY", None, "http://127.0.0.1:8000/v1"), lambda v: v == "PROGRA_TEST_KEY"))
    H.report("6 secrets", H.run_class(cases, (KeyNotAllowed,)))


# -- 7. SQL is read-only --------------------------------------------------------------------------

@pytest.fixture()
def sql_root(tmp_path):
    import pyarrow as pa

    from storage import DatasetStore

    store = DatasetStore(str(tmp_path / "root"))
    good = store.write("segments", pa.table({"segment_id": ["s1", "s2"], "x": [1, 2]}), dataset_id="aaaaaaaaaaaa", config={})
    bad = store.write("segments", pa.table({"segment_id": ["t1"], "x": [3]}), dataset_id="bbbbbbbbbbbb", config={})
    (Path(store.dataset_dir("segments", bad.dataset_id)) / "_manifest.json").write_text("{not json")
    return tmp_path / "root", good


def _parts(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))}


def test_user_sql_reads_committed_data_and_nothing_else(sql_root, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app
    from storage import Catalog, CorruptManifest, DatasetStore, SQLRefused

    root, good = sql_root
    part = next(p for p in root.rglob("part-*.parquet") if good.dataset_id in str(p))
    before = _parts(root)
    cat = Catalog(str(root))
    hostile = [f"COPY (SELECT 'evil' AS segment_id, 9 AS x) TO '{part}' (FORMAT parquet)", f"ATTACH '{tmp_path}/x.db' AS x",
               "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_text('/etc/hostname')", "SELECT * FROM glob('/etc/*')",
               "INSTALL httpfs", "LOAD httpfs", "SET enable_external_access = true", "CREATE TABLE t AS SELECT 1",
               "SELECT 1; COPY segments TO '/tmp/progra-out.csv'", "DROP VIEW segments", "PRAGMA enable_profiling",
               f"SELECT * FROM read_parquet('{tmp_path}/../../etc/*.parquet')", "CALL dbgen(sf=1)", "EXPORT DATABASE '/tmp/progra-db'",
               "SELECT * FROM duckdb_settings() WHERE name = 'x'; SET threads = 1", "UPDATE segments SET x = 0", "VACUUM"]
    cases = [(q[:60], lambda q=q: cat.user_sql(q), lambda v: isinstance(v, (SQLRefused, Exception)) and not hasattr(v, "num_rows"))
             for q in hostile]
    cases.append(("the committed parts are unchanged", lambda: _parts(root), lambda v: v == before))
    cases.append(("the view shows the committed rows", lambda: cat.user_sql("select segment_id from segments order by 1").column(0).to_pylist(),
                  lambda v: v == ["s1", "s2"]))
    runner = CliRunner()
    for where in ["1=1; COPY segments TO '/tmp/progra-x.csv'", "1=1 -- comment", "x > (SELECT count(*) FROM read_csv('/etc/passwd'))",
                  "1=1) UNION ALL (SELECT 'evil', 9"]:
        cases.append((f"export --where {where[:40]}", lambda where=where: runner.invoke(
            app, ["export", "segments", str(tmp_path / "o.parquet"), "--where", where, "--root", str(root)]),
            lambda r: r.exit_code != 0 and not (tmp_path / "o.parquet").exists()))
    cases.append(("a good --where works", lambda: runner.invoke(app, ["export", "segments", str(tmp_path / "k.parquet"), "--where", "x = 2",
                                                                   "--root", str(root)]), lambda r: r.exit_code == 0 and "1 rows" in r.output))
    cases.append(("progra sql refuses COPY", lambda: runner.invoke(app, ["sql", f"COPY segments TO '{tmp_path}/c.csv'", "--root", str(root)]),
                  lambda r: r.exit_code == 2 and not (tmp_path / "c.csv").exists()))
    store = DatasetStore(str(root))
    cases.append(("corrupt manifest: other datasets listed", lambda: [r.dataset_id for r in store.list()], lambda v: v == [good.dataset_id]))
    cases.append(("corrupt manifest named", lambda: store.ref("segments", "bbbbbbbbbbbb"),
                  lambda v: isinstance(v, CorruptManifest) and "segments/bbbbbbbbbbbb" in str(v)))
    H.report("7 read-only SQL", H.run_class(cases, (SQLRefused, CorruptManifest, Exception)))


# -- 8. config input --------------------------------------------------------------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
                                                       for p, c in zip("abcdefgh", "bcdefghi", strict=True))


def test_config_input_is_bounded_typed_and_clear(tmp_path):
    from pydantic import ValidationError

    (tmp_path / "bomb.yaml").write_text(BOMB)
    (tmp_path / "big.yaml").write_text("storage:\n  root: '" + "x" * (2 << 20) + "'\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    cases = [("alias bomb in --config", lambda: load_config(path=tmp_path / "bomb.yaml"), lambda e: isinstance(e, ConfigInputError)),
             ("alias bomb in --set", lambda: load_config("embedded", overrides=[
                 "ingest.jsonl=[&a [x, x, x, x, x, x, x, x], &b [*a, *a, *a, *a, *a, *a], &c [*b, *b, *b, *b, *b, *b], [*c, *c, *c, *c]]"]),
              lambda e: isinstance(e, ConfigInputError)),
             ("alias in a flow-style --set", lambda: load_config("embedded", overrides=["ingest.jsonl=[&a x, *a, *a]"]),
              lambda e: isinstance(e, ConfigInputError)),
             ("a 2 MB config file", lambda: load_config(path=tmp_path / "big.yaml"), lambda e: isinstance(e, ConfigInputError)),
             ("a 100 kB --set value", lambda: load_config("embedded", overrides=["storage.root=" + "x" * 100_000]),
              lambda e: isinstance(e, ConfigInputError)),
             ("a config that is a list", lambda: load_config(path=tmp_path / "list.yaml"), lambda e: isinstance(e, ConfigInputError))]
    for profile in ["../configs/embedded", "/etc/passwd", "embedded/../paper", "..", "", "embedded.yaml", "EMBEDDED\x00", "x" * 500]:
        cases.append((f"profile {profile[:30]!r}", lambda p=profile: load_config(p) if p else ConfigInputError("empty profile is the default"),
                      lambda e: isinstance(e, ConfigInputError)))
    for o in ["llm.timeout_s=.inf", "llm.timeout_s=-.inf", "grpo.learning_rate=.nan", "ingest.held_out_percent=true",
              "ingest.held_out_percent=50.5", "models.policy=no", "models.policy=null", "llm.concurrency='8'", "evaluate.limit=yes",
              "grpo.temperature=1e999", "sft.max_steps=1e3", "ingest.jsonl=a.jsonl", "storage.root=7", "grpo.use_vllm=on"]:
        cases.append((o, lambda o=o: load_config("embedded", overrides=[o]), lambda e: isinstance(e, ValidationError)))
    for stage_kw in [{"profile": "../configs/paper"}, {"profile": "/tmp/x"}]:
        from progra_core.config import resolve_config
        cases.append((f"deployment profile {stage_kw['profile']}", lambda kw=stage_kw: resolve_config(None, kw["profile"], None),
                      lambda e: isinstance(e, ConfigInputError)))
    cases.append(("valid overrides still work", lambda: load_config("embedded", overrides=["evaluate.limit=3", "grpo.learning_rate=1"]),
                  lambda c: c.evaluate.limit == 3 and c.grpo.learning_rate == 1.0))
    H.report("8 config input", H.run_class(cases, (ConfigInputError, ValidationError, ValueError, yaml.YAMLError), deadline_s=5))
