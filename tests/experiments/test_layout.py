"""The layering the README describes, each arrow pointing down: ``nn`` imports nothing of ours,
``experiments`` imports ``nn`` only, ``sweeps`` (the engine) imports ``experiments`` and ``nn`` but never the
Hydra plugin in ``hydra_plugins``, which is the one front that reaches into ``sweeps``; and no entry point
or test patches ``sys.path`` (the package is installed)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OURS = ("nn", "experiments", "sweeps", "hydra_plugins")
FORBIDDEN = {  # package: those of ours it must not import
    "nn": {"experiments", "sweeps", "hydra_plugins"},
    "experiments": {"sweeps", "hydra_plugins"},
    "sweeps": {"hydra_plugins"},
}
DOTTED = re.compile(rf"({'|'.join(OURS)})(\.\w+)+")  # "sweeps.trial.run_job": a _target_ or import_module name


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def referenced_modules(path: Path) -> set[str]:
    """What ``path`` imports, relative imports made absolute, and the dotted names of ours its strings give
    (``_target_`` values, ``importlib.import_module`` arguments)."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(REPO).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):  # from . import x: <package>.x; from ..a import b: <parent>.a
            base = ".".join(package[: len(package) - node.level + 1] if node.level else ())
            if node.module:
                names.add(f"{base}.{node.module}" if base else node.module)
            else:
                names |= {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED.fullmatch(node.value):
            names.add(node.value)
    return names


def test_no_module_under_experiments_imports_sweeps():
    offenders = {
        str(path.relative_to(REPO)): sorted(m for m in imported_modules(path) if m.split(".")[0] == "sweeps")
        for path in (REPO / "experiments").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("package", list(FORBIDDEN))
def test_no_package_imports_one_above_it(package):
    paths, above = sorted((REPO / package).rglob("*.py")), FORBIDDEN[package]
    assert paths
    offenders = {
        str(path.relative_to(REPO)): sorted(m for m in referenced_modules(path) if m.split(".")[0] in above)
        for path in paths
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_nothing_patches_sys_path():
    paths = [*REPO.glob("experiments/*.py"), *REPO.glob("sweeps/*.py"), *REPO.glob("tests/**/*.py")]
    assert paths
    assert [
        str(p.relative_to(REPO)) for p in paths if "sys.path." in p.read_text() and p.name != "test_layout.py"
    ] == []
