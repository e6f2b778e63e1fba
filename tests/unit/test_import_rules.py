"""The package's layering, checked on the source (no imports run): nothing outside ``tests/``
imports ``tests``, and the converter uses only the service's declared surface for build-time
tools (see the ``service`` package docstring)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICE_SURFACE = {"service.model_folder", "service.scoring"}


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import in ``path``, at any depth (lazy imports too)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", ["converters", "bench", "service", "gateway", "tools"])
def test_nothing_outside_tests_imports_tests(folder: str) -> None:
    offences = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in python_files(folder)
        for line, module in imported_modules(path)
        if module == "tests" or module.startswith("tests.")
    ]
    assert not offences, offences


def test_makefile_does_not_import_tests() -> None:
    assert "tests." not in (REPO / "Makefile").read_text(encoding="utf-8")


def test_converter_uses_only_the_declared_service_surface() -> None:
    offences = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in python_files("converters")
        for line, module in imported_modules(path)
        if (module == "service" or module.startswith("service.")) and module not in SERVICE_SURFACE
    ]
    assert not offences, offences


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def test_converter_modules_import_no_cycle() -> None:
    """Lazy imports included: a cycle is a cycle whether or not it happens to import today."""
    graph = {
        _module_name(path): {m for _, m in imported_modules(path) if m.startswith("converters.")}
        for path in python_files("converters")
    }
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for dep in sorted(graph.get(module, ())):
            if dep in path:
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            else:
                visit(dep, [*path, dep])

    for module in sorted(graph):
        visit(module, [module])
    assert not cycles, sorted(set(cycles))
