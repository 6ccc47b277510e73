"""Dependencies flow one way: loaders -> graph -> scoring -> socialrisk, never back up; no
module imports another that imports it back; nothing imports the command line or the service.

Every import counts, at module level or inside a function: a deferred import is still a
dependency. Only imports under ``if TYPE_CHECKING:`` are left out, as they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["loaders", "graph", "scoring", "socialrisk"]

#: Entry points: what they may import, nobody imports them (but themselves).
ENTRY_POINTS = {
    "socialrisk.cli": ("socialrisk.cli", "socialrisk.cli_views", "socialrisk.cli_common"),
    "socialrisk.cli_views": ("socialrisk.cli", "socialrisk.cli_views", "socialrisk.cli_common"),
    "socialrisk.cli_common": ("socialrisk.cli", "socialrisk.cli_views", "socialrisk.cli_common"),
    "socialrisk.service": ("socialrisk.service", "socialrisk.cli", "socialrisk.cli_views", "socialrisk.cli_common"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for child in node.body:
                    skip.update(id(n) for n in ast.walk(child))
    return skip


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """First-party modules ``path`` imports (the most specific module each import names)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_nodes(tree)
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()

    def add(name: str) -> None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != here:
            found.add(name)

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                add(full if full in modules else base)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for package in ORDER for p in sorted((ROOT / package).rglob("*.py"))}
    modules = set(paths)
    return {name: imports_of(path, modules) for name, path in paths.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


@pytest.mark.parametrize("package", ORDER)
def test_no_module_imports_upwards(package: str, graph: dict[str, set[str]]) -> None:
    allowed = set(ORDER[: ORDER.index(package) + 1])
    bad = {
        module: sorted(t for t in targets if t.split(".")[0] not in allowed)
        for module, targets in graph.items()
        if module.split(".")[0] == package
    }
    bad = {m: t for m, t in bad.items() if t}
    assert not bad, f"modules of {package} import later packages of the flow {ORDER}: {bad}"


def test_no_import_circle(graph: dict[str, set[str]]) -> None:
    found = circles(graph)
    assert not found, "modules that import each other (directly or round a loop): " + "; ".join(" <-> ".join(c) for c in found)


def _entry(module: str) -> str | None:
    for entry in ENTRY_POINTS:
        if module == entry or module.startswith(entry + "."):
            return entry
    return None


def test_nothing_imports_the_command_line_or_the_service(graph: dict[str, set[str]]) -> None:
    bad = []
    for module, targets in graph.items():
        for target in targets:
            entry = _entry(target)
            if entry is None:
                continue
            if not any(module == ok or module.startswith(ok + ".") for ok in ENTRY_POINTS[entry]):
                bad.append(f"{module} imports {target}")
    assert not bad, "only the command line (and the service itself) may import these entry points: " + "; ".join(sorted(bad))


def test_the_checks_see_a_circle_and_an_upward_import() -> None:
    # the detector on a made-up graph: a <-> b circle, c alone
    assert circles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_every_engine_lives_in_graph(graph: dict[str, set[str]]) -> None:
    # the walks the scoring features solve on, single machine and Spark, are graph modules;
    # the application only wires them
    for module in ("graph.walks", "graph.spark.walks", "graph.spark.tables"):
        assert module in graph, f"{module} is missing"
    engines = []
    for path in sorted((ROOT / "socialrisk").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", getattr(b, "attr", "")) == "Walks" for b in node.bases):
                engines.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert not engines, f"propagation engines outside graph/: {engines}"
