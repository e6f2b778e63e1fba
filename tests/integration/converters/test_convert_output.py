"""What rerank-convert prints is ours: progress lines and the result, nothing from the libraries
it drives (weight-loading bars, ONNX Runtime's optimizer and quantizer warnings, torch warnings)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rerank.converters.testing.llama_cpp import convert_to_gguf
from tests.support import REPO

OUR_LINE = re.compile(
    r"\d\d:\d\d:\d\d (memory|checkpoint|gguf|tokenizer|graph|verify|variants|seal|done): \S.*"
    r"|wrote \S+ \(max \|Δ\| \S+ on \d+ probes\)"
)


def run_cli(source: Path, out: Path) -> str:
    """stderr of a whole conversion with the default variants (where most third-party noise was)."""
    result = subprocess.run(
        [sys.executable, "-m", "rerank.converters.cli", str(source), "--name", "m", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    return result.stderr


def assert_only_ours(stderr: str) -> None:
    foreign = [line for line in stderr.splitlines() if not OUR_LINE.fullmatch(line)]
    assert not foreign, foreign
    assert "verify: max |Δ logit|" in stderr


@pytest.mark.parametrize("kind", ["xlmr", "jina-v1", "gte"])
def test_checkpoint_conversion_prints_only_our_lines(kind, checkpoint, tmp_path):
    assert_only_ours(run_cli(checkpoint(kind), tmp_path))


def test_gguf_conversion_prints_only_our_lines(checkpoint, tmp_path):
    """A quantised JinaBERT GGUF: memory-mapped weights, a pooler-less head, notes."""
    gguf = convert_to_gguf(checkpoint("jina-v1"), tmp_path / "jina.gguf", "q8_0")
    stderr = run_cli(gguf, tmp_path / "models")
    assert_only_ours(stderr)
    assert "gguf: note: the GGUF has no BERT pooler" in stderr
