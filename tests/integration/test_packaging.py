"""The wheel a user installs: one namespace, no test fixtures, the build outputs inside.

Built as pip builds it for ``pip install .`` (an isolated build from the pinned build
requirements), then read as a zip: what site-packages would receive.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = sorted(Path(out).glob("rerank-*.whl"))
    return zipfile.ZipFile(built)


def test_the_wheel_installs_only_rerank_names(wheel: zipfile.ZipFile) -> None:
    top = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in top if not t.endswith(".dist-info")} == {"rerank", "rerank_client"}


def test_the_wheel_carries_no_test_fixtures(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert not [n for n in names if "/testing/" in n or n.startswith("tests/")]
    assert "rerank/converters/convert.py" in names


def test_the_wheel_carries_the_build_outputs(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert {
        "rerank/service/protocol/rerank_pb2.py",
        "rerank/service/protocol/rerank_pb2_grpc.py",
        "rerank/service/protocol/protos/rerank/v1/rerank.proto",
        "rerank/gateway/assets/rerank.pb",
        "rerank/gateway/assets/openapi.json",
    } <= names
    stub = wheel.read("rerank/service/protocol/rerank_pb2_grpc.py").decode()
    assert "from rerank.service.protocol import rerank_pb2" in stub


def test_the_commands_point_into_the_namespace(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    for command in ("rerank-serve", "rerank-stack", "rerank-convert", "rerank-gateway", "rerank"):
        line = next(line for line in text.splitlines() if line.startswith(f"{command} ="))
        target = line.split("=", 1)[1].strip()
        assert target.startswith(("rerank.", "rerank_client.")), line


def test_the_package_finds_its_own_files_outside_the_checkout(wheel: zipfile.ZipFile, tmp_path: Path) -> None:
    """Its data files are found by its own names (``rerank.gateway``), not by a folder name that
    only a checkout has: Envoy's descriptor set and assets from the wheel's files, away from it."""
    site = tmp_path / "site"
    wheel.extractall(site)
    code = (
        "import rerank.gateway\n"
        "from rerank.gateway.descriptor import descriptor_set\n"
        "from rerank.gateway.envoy_config.bootstrap import packaged_assets\n"
        "print(rerank.gateway.__file__, descriptor_set(), packaged_assets(), sep='\\n')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    paths = result.stdout.split()
    assert len(paths) == 3 and all(path.startswith(str(site)) for path in paths), paths
