"""``rerank-convert`` in a serving-only install (``rerank[gateway]``: no onnx, torch or
transformers): ``--help`` and ``--list`` work, and converting says in one line which extra to
install. Here the converter's packages are made unimportable in a subprocess; in ``make
test-unit-lean`` they are really absent."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import REPO

BLOCKED = ("onnx", "torch", "transformers", "onnxruntime.transformers")
"""What the converter needs and a serving-only install lacks (onnxruntime itself is served with)."""
RUN = (
    "import sys\n"
    f"for name in {BLOCKED!r}:\n"
    "    sys.modules[name] = None  # import fails, as where the package is not installed\n"
    "from rerank.converters.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def rerank_convert(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUN, *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(("flag", "shows"), [("--help", "--variants"), ("--list", "bge-reranker-v2-m3")])
def test_help_and_list_work(flag: str, shows: str) -> None:
    result = rerank_convert(flag)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert shows in result.stdout and "demo" in result.stdout


def test_the_list_says_the_demo_is_a_demo() -> None:
    listing = rerank_convert("--list").stdout
    demo = listing.split("\n\ndemo\n", 1)[1]
    assert "A DEMO, not a production reranker" in demo and "the extra 'demo'" in demo


@pytest.mark.parametrize(
    ("source", "extras"), [("someone/some-reranker", "convert"), ("demo", "convert,demo")], ids=["hub", "demo"]
)
def test_converting_says_which_extra_to_install(source: str, extras: str) -> None:
    result = rerank_convert(source, "--out", "/nonexistent")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    named = " and ".join(repr(extra) for extra in extras.split(","))
    assert line.startswith(f"rerank-convert: error: converting needs the extra {named} (")
    assert line.endswith(f" not installed): pip install 'rerank[{extras}]'")


def test_a_mistyped_name_is_told_first() -> None:
    """Finding out that a name is not in the catalog needs no extra."""
    (line,) = rerank_convert("bge-reranker-v2").stderr.splitlines()
    assert line.startswith("rerank-convert: error: 'bge-reranker-v2' is neither a supported model's name")
