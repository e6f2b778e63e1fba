"""rerank-convert turns the converter's typed errors into one line and exit status 1."""

from __future__ import annotations

from pathlib import Path

import pytest

# The converter's unit tests need its [convert] extra (not torch); without it they skip.
pytest.importorskip("onnx", reason="needs the [convert] extra")

from rerank.converters import cli, sources
from rerank.converters.errors import (
    CheckpointError,
    ConversionError,
    GgufError,
    InsufficientMemoryError,
    SourceError,
    VerificationError,
)


def _stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_every_typed_error_is_a_conversion_error() -> None:
    for error in (SourceError, CheckpointError, GgufError, InsufficientMemoryError, VerificationError):
        assert issubclass(error, ConversionError)


def test_a_checkpoint_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert cli.main([str(tmp_path / "empty"), "--out", str(tmp_path / "models")]) == 1
    lines = _stderr_lines(capsys)  # progress lines first, then the error
    assert lines[-1] == f"rerank-convert: error: {tmp_path / 'empty'}: no model.safetensors or pytorch_model.bin"
    assert sum(line.startswith("rerank-convert: error:") for line in lines) == 1
    assert not (tmp_path / "models").exists()


def _failing_load(error: BaseException):
    def load_source(*args: object, **kwargs: object) -> None:
        raise error

    return load_source


@pytest.mark.parametrize(
    "error", [VerificationError("differs by 1e-2;\n  worst probe #3"), FileExistsError("models/x exists")]
)
def test_errors_lose_their_line_breaks(
    error: Exception, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sources, "load_source", _failing_load(error))
    assert cli.main(["some/checkpoint"]) == 1
    assert _stderr_lines(capsys) == [f"rerank-convert: error: {' '.join(str(error).split())}"]


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "load_source", _failing_load(CheckpointError("broken")))
    with pytest.raises(CheckpointError, match="broken"):
        cli.main(["some/checkpoint", "--debug"])


def test_unexpected_errors_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug is not a user error: its traceback stays."""
    monkeypatch.setattr(sources, "load_source", _failing_load(ZeroDivisionError("bug")))
    with pytest.raises(ZeroDivisionError):
        cli.main(["some/checkpoint"])


def test_interrupt(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sources, "load_source", _failing_load(KeyboardInterrupt()))
    assert cli.main(["some/checkpoint"]) == 130
    assert _stderr_lines(capsys) == ["rerank-convert: interrupted; nothing was written"]
