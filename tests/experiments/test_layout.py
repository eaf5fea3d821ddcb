"""The layering the README describes: ``experiments/`` never imports ``sweeps/``, and no entry point or test
patches ``sys.path`` (the package is installed)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_module_under_experiments_imports_sweeps():
    offenders = {
        str(path.relative_to(REPO)): sorted(m for m in imported_modules(path) if m.split(".")[0] == "sweeps")
        for path in (REPO / "experiments").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_nothing_patches_sys_path():
    paths = [*REPO.glob("experiments/*.py"), *REPO.glob("sweeps/*.py"), *REPO.glob("tests/**/*.py")]
    assert paths
    assert [
        str(p.relative_to(REPO)) for p in paths if "sys.path." in p.read_text() and p.name != "test_layout.py"
    ] == []
