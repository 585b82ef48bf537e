"""Code versions come from each stage's import closure, not from hand lists: an edit anywhere a
stage's code reaches changes its version (and so its dataset ids), an edit elsewhere does not."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from progra_core import stages, versioning

REPO = Path(__file__).resolve().parents[2]

#: the module each stage's CODE_VERSION is declared in
STAGE_MODULES = {
    "ingest": "progra_core.data.ingest", "synthesize": "progra_core.data.synthesize", "mix": "progra_core.data.mix",
    "segment": "progra_core.data.segment", "awareness": "progra_core.data.awareness", "verify": "progra_core.data.verify",
    "augment": "progra_core.data.augment", "sft_data": "progra_core.data.sft_data", "sft": "progra_core.train.sft",
    "grpo": "progra_core.train.grpo", "evaluate": "progra_core.evaluation.harness",
}


def _closure_by_hand(module: str) -> set[str]:
    """The test's own walk (independent of versioning's): every progra_core module reachable by
    an import statement anywhere in a file, with the packages on the way."""
    def path(name: str) -> Path | None:
        base = REPO.joinpath(*name.split("."))
        return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)

    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for n in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
            p = path(n) if n.startswith("progra_core") else None
            if p is None or n in seen:
                continue
            seen.add(n)
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, ast.Import):
                    todo += [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    todo += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return seen


def test_every_stage_version_is_its_import_closure():
    assert set(STAGE_MODULES) == set(stages.STAGE_NAMES)
    for st in stages.STAGES:
        module = STAGE_MODULES[st.name]
        inside, _ = versioning.closure(module)
        assert set(inside) == _closure_by_hand(module), st.name
        assert st.code_version == versioning.code_version("1", module), f"{st.name}: version not derived from its closure"


@pytest.mark.parametrize(("edited", "must_change", "must_stay"), [
    ("calls.py", {"verify", "awareness", "grpo", "segment"}, set()),       # schema_equal, span parsing
    ("train/sft.py", {"sft"}, {"ingest", "segment", "verify", "evaluate", "grpo"}),  # SFT's own rows and trainer
    ("train/trainer.py", {"sft", "grpo"}, {"ingest", "segment", "verify", "evaluate"}),  # what both trainers share
    ("envs/bfcl.py", {"evaluate", "grpo", "ingest"}, set()),
    ("sources/strict.py", {"ingest"}, set()),
    ("train/rewards.py", {"grpo"}, {"ingest", "segment", "awareness", "verify", "sft_data"}),
])
def test_an_edit_changes_exactly_the_stages_that_import_it(tmp_path, edited, must_change, must_stay):
    """Symptom: verify/awareness ignored calls.py, grpo ignored the trainer helpers, the envs and calls.py,
    evaluation ignored envs/bfcl.py, ingest ignored sources/strict.py."""
    root = tmp_path / "copy"
    shutil.copytree(REPO / "progra_core", root / "progra_core", ignore=shutil.ignore_patterns("__pycache__"))

    def versions() -> dict[str, str]:
        return {name: versioning.code_version("1", module, root=root) for name, module in STAGE_MODULES.items()}

    before = versions()
    target = root / "progra_core" / edited
    target.write_text(target.read_text() + "\n# a comment is not code\n")
    assert versions() == before, "a comment changed a code version"
    target.write_text(target.read_text() + "\nPROBE = 1\n")
    after = versions()
    changed = {n for n in before if before[n] != after[n]}
    assert must_change <= changed, f"editing {edited} left {sorted(must_change - changed)} unchanged"
    assert not (must_stay & changed), f"editing {edited} changed {sorted(must_stay & changed)}"
    importers = {n for n, m in STAGE_MODULES.items() if f"progra_core.{edited.removesuffix('.py').replace('/', '.')}"
                 in versioning.closure(m, root=root)[0]}
    assert changed == importers


def test_third_party_versions_enter_the_version(monkeypatch):
    base = versioning.code_version("1", "progra_core.train.grpo")
    real = versioning.third_party
    monkeypatch.setattr(versioning, "third_party", lambda pk: {**real(pk), "trl": "0.0.1"})
    assert versioning.code_version("1", "progra_core.train.grpo") != base


def test_file_digest_refuses_what_is_not_a_regular_file(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "none")
    for p in (tmp_path / "dangling", Path("/dev/zero"), tmp_path):
        with pytest.raises(versioning.Unreadable):
            versioning.file_digest(p)
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    first = versioning.file_digest(f)
    f.write_bytes(b"abd")  # same size
    assert versioning.file_digest(f) != first
