"""Dependencies flow one way: loaders -> graph -> scoring -> socialrisk, never back up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["loaders", "graph", "scoring", "socialrisk"]


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(ORDER)


@pytest.mark.parametrize("package", ORDER)
def test_no_module_imports_upwards(package: str) -> None:
    allowed = set(ORDER[: ORDER.index(package) + 1])
    for path in sorted((ROOT / package).rglob("*.py")):
        upward = imported_packages(path) - allowed
        assert not upward, f"{path.relative_to(ROOT)} imports {sorted(upward)}, which come later in the flow"
