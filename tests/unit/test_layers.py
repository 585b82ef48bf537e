"""progra's layers (docs/architecture.md): lower layers never import higher ones, counting imports
inside functions, and the core never imports Prefect."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: progra_core's parts, bottom up; each may import its own part and the parts listed for it.
CORE = {
    "calls": set(), "versioning": set(), "sharding": set(), "schemas": set(), "methods": set(),
    "envs": {"calls", "schemas"},
    "llm": {"schemas", "versioning"},
    "prompts": {"calls", "schemas"},
    "sources": {"calls", "schemas", "envs"},
    "config": {"envs", "methods"},
}
CORE["data"] = set(CORE) | {"llm", "prompts"}
CORE["train"] = CORE["data"] | {"data"}
CORE["evaluation"] = CORE["data"] | {"data"}
CORE["stages"] = set(CORE) | {"train", "evaluation"}
#: The top-level packages: what each may import.
PACKAGES = {"progra_core": {"progra_core"}, "storage": {"progra_core", "storage"},
            "tasks": {"progra_core", "storage", "tasks"}, "flows": {"progra_core", "storage", "tasks", "flows"}}


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "progra_core" else None


def test_core_parts_import_only_lower_parts():
    bad = []
    for path in sorted((REPO / "progra_core").rglob("*.py")):
        rel = path.relative_to(REPO / "progra_core")
        me = rel.parts[0].removesuffix(".py")
        if me == "__init__":
            continue
        for line, mod in _imports(path):
            other = _part(mod)
            if other in CORE and other != me and other not in CORE[me]:
                bad.append(f"progra_core/{rel}:{line} ({me}) imports {mod} ({other})")
            if mod.split(".")[0] == "prefect":
                bad.append(f"progra_core/{rel}:{line} imports Prefect")
    assert not bad, "\n".join(bad)
    assert set(CORE) >= {p.name.removesuffix(".py") for p in (REPO / "progra_core").iterdir()
                         if p.name != "__init__.py" and (p.suffix == ".py" or p.is_dir()) and p.name != "__pycache__"}


def test_packages_import_only_lower_packages():
    bad = []
    for pkg, allowed in PACKAGES.items():
        for path in sorted((REPO / pkg).rglob("*.py")):
            for line, mod in _imports(path):
                top = mod.split(".")[0]
                if top in PACKAGES and top not in allowed:
                    bad.append(f"{path.relative_to(REPO)}:{line} imports {mod}")
    assert not bad, "\n".join(bad)
