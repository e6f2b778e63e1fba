"""The build can be repeated on any later day: the code generator is the one the lock pins.

pip builds the package in an isolated environment that never sees ``requirements/dev.lock``; if
``[build-system].requires`` is looser than the lock, a grpcio-tools released after the lock writes
stubs that the locked grpcio refuses to import (``RuntimeError: The grpc package installed is at
version ...``). ``make lock`` copies the pins across (``scripts/pin-build``); these tests fail when
they drift apart or when the installed stubs need a newer runtime than is installed or declared.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

from tests.support import REPO

PROTOCOL = REPO / "service" / "protocol"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / "dev.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if match:
            pins[_canonical(match.group(1))] = match.group(2)
    return pins


def _lock_needed_by() -> dict[str, set[str]]:
    """Each locked package and the packages its ``# via`` comment names (what needs it)."""
    needed_by: dict[str, set[str]] = {}
    current = None
    for line in (REPO / "requirements" / "dev.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if match:
            current = _canonical(match.group(1))
            needed_by[current] = set()
            line = line[match.end() :]
        via = re.match(r"^\s*#\s*(?:via)?\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*$", line)
        if current and via and via.group(1) != "via":
            needed_by[current].add(_canonical(via.group(1)))
        inline = re.match(r"^\s*#\s*via\s+([A-Za-z0-9][A-Za-z0-9._-]*)\s*$", line)
        if current and inline:
            needed_by[current].add(_canonical(inline.group(1)))
    return needed_by


def _pyproject() -> dict:  # type: ignore[type-arg]
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _runtime_floor(name: str) -> Version:
    for text in _pyproject()["project"]["dependencies"]:
        requirement = Requirement(text)
        if _canonical(requirement.name) == name:
            floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
            assert floors, f"{text!r} declares no lower bound"
            return max(floors)
    raise AssertionError(f"pyproject.toml does not depend on {name}")


def _generated_grpc_versions() -> dict[Path, Version]:
    versions = {}
    for path in sorted(PROTOCOL.glob("*_pb2_grpc.py")):
        match = re.search(r"^GRPC_GENERATED_VERSION = '([^']+)'", path.read_text(), re.MULTILINE)
        assert match, f"{path.name}: no GRPC_GENERATED_VERSION"
        versions[path] = Version(match.group(1))
    assert versions, "no generated *_pb2_grpc.py modules: install the package first"
    return versions


def _generated_protobuf_versions() -> dict[Path, Version]:
    versions = {}
    pattern = re.compile(
        r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),"
    )
    for path in sorted(PROTOCOL.glob("*_pb2.py")):
        match = pattern.search(path.read_text())
        assert match, f"{path.name}: no protobuf runtime version check"
        versions[path] = Version(".".join(match.groups()))
    return versions


def test_generated_stubs_run_on_the_installed_and_the_declared_grpcio() -> None:
    installed = Version(metadata.version("grpcio"))
    floor = _runtime_floor("grpcio")
    for path, needed in _generated_grpc_versions().items():
        assert needed <= installed, f"{path.name} needs grpcio>={needed}, {installed} is installed"
        assert needed <= floor, f"{path.name} needs grpcio>={needed}; pyproject.toml declares grpcio>={floor}"
    installed_protobuf = Version(metadata.version("protobuf"))
    protobuf_floor = _runtime_floor("protobuf")
    for path, needed in _generated_protobuf_versions().items():
        assert needed <= installed_protobuf, f"{path.name} needs protobuf>={needed}, {installed_protobuf} is installed"
        assert needed <= protobuf_floor, (
            f"{path.name} needs protobuf>={needed}; pyproject.toml declares >={protobuf_floor}"
        )


def test_build_requirements_are_the_locked_versions() -> None:
    lock = _lock_pins()
    requires = [Requirement(text) for text in _pyproject()["build-system"]["requires"]]
    pinned = {}
    for requirement in requires:
        specs = list(requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"build requirement {requirement} is not pinned with =="
        pinned[_canonical(requirement.name)] = specs[0].version
    for name, version in pinned.items():
        assert name in lock, (
            f"build requirement {name} is not in requirements/dev.lock (add it to requirements/build.in)"
        )
        assert lock[name] == version, f"build requires {name}=={version}, the lock pins {lock[name]}: run make lock"
    # The build environment's whole closure is pinned: whatever the lock installs for a build requirement.
    for name, needed_by in _lock_needed_by().items():
        for parent in needed_by & set(pinned):
            assert name in pinned, (
                f"the build installs {name} (for {parent}) without a pin: add it to requirements/build.in"
            )
    build_in = [
        _canonical(Requirement(line.split("#", 1)[0].strip()).name)
        for line in (REPO / "requirements" / "build.in").read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]
    assert sorted(build_in) == sorted(pinned), (
        "requirements/build.in and [build-system].requires name different packages"
    )
