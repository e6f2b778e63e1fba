"""The layering, checked on the source: nothing outside ``tests/`` imports ``tests``; the
converter uses only the service's declared surface for build-time tools (see the ``service``
package docstring); and the test suite's own rules: every test is a unit or an integration test,
tests share helpers through the :mod:`tests.support` package only, and the unit tests need no torch."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from tests.support import REPO

SERVICE_SURFACE = {"rerank.service.model_folder", "rerank.service.scoring"}
TESTS = REPO / "tests"


INSTALLED = ("service", "gateway", "converters")
"""Top-level folders whose modules are installed as ``rerank.<folder>`` (setup.py)."""


def _module_name(path: Path, root: Path = REPO) -> str:
    """The import name of ``path`` under ``root``: ``service/server.py`` is ``rerank.service.server``."""
    parts = path.relative_to(root).with_suffix("").parts
    if parts[0] in INSTALLED:
        parts = ("rerank", *parts)
    return ".".join(parts).removesuffix(".__init__")


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import in ``path``, at any depth (lazy imports too)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def imported_names(path: Path, root: Path = REPO) -> Iterator[tuple[int, str]]:
    """Like :func:`imported_modules`, with relative imports resolved against ``path``'s package,
    and ``from package import name`` also yielding ``package.name`` (which may be a module)."""
    package = _module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            yield node.lineno, base
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)


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
        if (module == "rerank.service" or module.startswith("rerank.service.")) and module not in SERVICE_SURFACE
    ]
    assert not offences, offences


@pytest.mark.parametrize("folder", ["converters", "bench", "service", "gateway", "tools", "tests", "clients"])
def test_installed_packages_are_imported_by_their_installed_names(folder: str) -> None:
    """``rerank.service``, never ``service``: the bare names exist only in a checkout (a wheel
    installs no top-level ``service``), so code importing them works here and nowhere else."""
    offences = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in python_files(folder)
        for line, module in imported_names(path)
        if module.split(".")[0] in INSTALLED
    ]
    assert not offences, offences


SERVICE_LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "settings", "model_folder", "protocol"}),
    frozenset({"backends", "telemetry", "admission"}),
    frozenset({"core"}),
    frozenset({"router", "scoring", "model_check"}),
    frozenset({"server"}),
    frozenset({"main"}),
    frozenset({"__main__"}),
)
"""The service's parts (its top-level modules and folders), lowest first, like TEI's: router ->
core -> backends, with the error enum, the settings table and the model folder's schema at the
bottom. A part imports only parts of lower layers and itself (``core/`` modules import one
another); the package's face (``rerank.service``: its version) is open to all."""


def _service_part(module: str) -> str | None:
    """The part of the service ``module`` is in (``rerank.service.core.batching``: ``core``), or
    None when it is not the service's or only its face."""
    if not module.startswith("rerank.service."):
        return None
    part = module.split(".")[2]
    return None if part.startswith("__") and part != "__main__" else part


def _layer(part: str) -> int:
    return next(n for n, parts in enumerate(SERVICE_LAYERS) if part in parts)


def upward_imports(paths: list[Path], root: Path = REPO) -> list[str]:
    """Imports in ``paths`` (the service's files under ``root``) from a part that is not in a
    lower layer."""
    offences = []
    for path in paths:
        own = _service_part(_module_name(path, root))
        if own is None:
            continue
        for line, module in imported_names(path, root):
            part = _service_part(module)
            if part is not None and part != own and _layer(part) >= _layer(own):
                offences.append(f"{path.relative_to(root)}:{line} ({own}) imports {module} ({part})")
    return sorted(set(offences))


def test_every_part_of_the_service_has_a_layer() -> None:
    parts = {_service_part(_module_name(path)) for path in python_files("service")}
    unplaced = sorted(p for p in parts if p is not None and not any(p in layer for layer in SERVICE_LAYERS))
    assert not unplaced, f"put them in SERVICE_LAYERS: {unplaced}"


def test_service_layers_import_only_downward() -> None:
    """backends and telemetry import nothing of core, router or server; core nothing of router or
    server; errors, settings and model_folder nothing of the service at all."""
    offences = upward_imports(python_files("service"))
    assert not offences, offences


def test_an_upward_import_is_found(tmp_path: Path) -> None:
    """The rule above is not vacuous: a backend importing the core, the core the router, or the
    errors the settings, is each found."""
    planted = {
        "service/backends/onnx.py": "from rerank.service.core import batching\n",
        "service/core/batching.py": "from rerank.service.router.status import status_json\n",
        "service/errors.py": "import rerank.service.settings\n",
        "service/router/status.py": "from rerank.service.core.batching import DynamicBatcher\n",
    }
    for name, text in planted.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    found = upward_imports(sorted(tmp_path.rglob("*.py")), tmp_path)
    assert sorted({line.split(":")[0] for line in found}) == sorted(list(planted)[:3]), found


def test_converter_modules_import_no_cycle() -> None:
    """Lazy imports included: a cycle is a cycle whether or not it happens to import today."""
    graph = {
        _module_name(path): {m for _, m in imported_modules(path) if m.startswith("rerank.converters.")}
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


# --- the test suite's own rules ---------------------------------------------------------------------


def test_every_test_module_is_a_unit_or_an_integration_test() -> None:
    strays = [
        str(path.relative_to(REPO))
        for path in TESTS.rglob("test_*.py")
        if path.relative_to(TESTS).parts[0] not in ("unit", "integration")
    ]
    assert not strays, (
        f"move them under tests/unit/ (no torch, Envoy or subprocess server) or tests/integration/: {strays}"
    )


def _is_test_module(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "tests" and any(p == "conftest" or p.startswith("test_") for p in parts)


def test_tests_import_no_conftest_and_no_other_test() -> None:
    """Helpers live in tests/support/; a conftest holds fixtures, a test module holds tests."""
    offences = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in sorted(TESTS.rglob("*.py"))
        for line, module in imported_names(path)
        if _is_test_module(module) or module == "conftest" or module.startswith("conftest.")
    ]
    assert not offences, offences


CONVERT_ONLY = {
    "torch",
    "transformers",
    "sentencepiece",
    "rerank.converters.testing",
    "tests.reference",
    "tests.jinabert_numpy",
    "tests.qwen3_reference",
}
"""What the unit tests must never import: torch, or what imports it."""


def test_unit_tests_import_no_torch() -> None:
    offences = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in [*sorted((TESTS / "unit").rglob("*.py")), *sorted((TESTS / "support").rglob("*.py"))]
        if path.exists()
        for line, module in imported_names(path)
        if any(module == m or module.startswith(m + ".") for m in CONVERT_ONLY)
    ]
    assert not offences, offences


def convert_extra() -> list[str]:
    """Import names of the ``[convert]`` extra's packages, as installed (``huggingface-hub`` ->
    ``huggingface_hub``)."""
    requirements = metadata.requires("rerank") or []
    names = {re.match(r"[A-Za-z0-9._-]+", r).group() for r in requirements if re.search(r"extra\s*==\s*.convert.", r)}
    return sorted(name.lower().replace("-", "_") for name in names)


LEAN_COLLECTION = """
import importlib.abc, sys
blocked, tried = set(sys.argv[1].split(",")), set()

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            tried.add(name.partition(".")[0])
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NotInstalled())
import pytest
status = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests/unit"])
print("tried:", ",".join(sorted(tried)))
sys.exit(status)
"""


def test_unit_tests_collect_without_the_convert_extra() -> None:
    """As in ``pip install -e '.[gateway,test]'``: the [convert] extra's packages cannot be
    imported, and collecting the unit tests must still succeed (a module that needs one skips
    itself with ``pytest.importorskip``) without even trying torch or transformers."""
    blocked = convert_extra()
    assert {"torch", "transformers", "onnx", "gguf"} <= set(blocked)
    result = subprocess.run(
        [sys.executable, "-c", LEAN_COLLECTION, ",".join(blocked)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    tried = result.stdout.rpartition("tried:")[2].split()[0].split(",") if "tried: " in result.stdout else []
    assert not {"torch", "transformers"} & set(tried), tried
