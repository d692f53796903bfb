"""Import directions between the packages, and no import cycles — checked on the code, not by eye.

Every ``import`` statement counts, also the ones inside functions (a late import still ties two
modules together: it only hides the loop from the interpreter until the function runs).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("codex_core", "codex_resources", "codex_assets", "codex_sensors", "codex_worker", "serving", "codex_cli")
FRAMEWORKS = ("dagster", "dagster_webserver", "dagster_postgres", "fastapi", "starlette", "uvicorn")

# package -> what it must never import (its own package and libraries not listed are fine).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "codex_core": FRAMEWORKS + tuple(p for p in PACKAGES if p != "codex_core"),
    "codex_resources": ("fastapi", "starlette", "uvicorn", "codex_assets", "codex_sensors", "codex_worker",
                        "serving", "codex_cli"),
    "codex_sensors": ("fastapi", "starlette", "uvicorn", "codex_assets", "codex_worker", "serving", "codex_cli"),
    "codex_assets": ("fastapi", "starlette", "uvicorn", "codex_worker", "serving", "codex_cli"),
    "codex_worker": ("fastapi", "starlette", "uvicorn", "serving", "codex_cli"),
    "serving": ("dagster", "dagster_webserver", "codex_resources", "codex_assets", "codex_sensors", "codex_worker",
                "codex_cli"),
    "codex_cli": (),
}


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Absolute names this module imports (relative imports resolved), anywhere in the file."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _project_target(imported: str) -> str | None:
    """The project module an import name refers to (``a.b.C`` -> ``a.b`` when ``C`` is not a module)."""
    while imported:
        if imported in MODULES:
            return imported
        imported = imported.rpartition(".")[0]
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_points_the_wrong_way(package: str) -> None:
    wrong = sorted(
        f"{name} imports {imported}"
        for name, imported_names in IMPORTS.items() if name.split(".")[0] == package
        for imported in imported_names
        if imported.split(".")[0] in FORBIDDEN[package]
    )
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_the_cli() -> None:
    wrong = sorted(f"{name} imports {imported}" for name, names in IMPORTS.items()
                   if not name.startswith("codex_cli") for imported in names if imported.split(".")[0] == "codex_cli")
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    result.append(sorted(component))
    return result


def test_no_import_cycles_between_modules() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, imported_names in IMPORTS.items():
        graph[name]
        for imported in imported_names:
            target = _project_target(imported)
            # A package's __init__ re-exporting its own modules is not a cycle of the design.
            if target and target != name and not name.startswith(target + ".") and not target.startswith(name + "."):
                graph[name].add(target)
    for target in list(graph):
        graph[target]
    cycles = _cycles(dict(graph))
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def test_no_import_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for name, imported_names in IMPORTS.items():
        for imported in imported_names:
            top = imported.split(".")[0]
            if top in graph and top != name.split(".")[0]:
                graph[name.split(".")[0]].add(top)
    cycles = _cycles(graph)
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_lazy_imports() -> None:
    # The worker's late import of the Definitions is exactly what a top-level-only check would miss.
    assert any(n.startswith("codex_assets") for n in IMPORTS.get("codex_worker", set()) | IMPORTS.get(
        "codex_worker.worker", set()))


def test_the_architecture_page_lists_every_module() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    tree = page.split("## Layout (one line per module)", 1)[1].split("```", 2)[1]
    listed, stack = set(), []
    for line in tree.strip("\n").splitlines():
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        stack[depth:] = [name.rstrip("/")]
        if name.endswith(".py"):
            listed.add("/".join(stack))
    actual = {str(path.relative_to(ROOT)) for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    assert listed == actual, f"missing: {sorted(actual - listed)}; gone: {sorted(listed - actual)}"
