"""The memory check: the peak estimate, MemAvailable, and refusing before any weights are read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# The converter's unit tests need its [convert] extra (not torch); without it they skip.
pytest.importorskip("gguf", reason="needs the [convert] extra")
pytest.importorskip("safetensors", reason="needs the [convert] extra")
pytest.importorskip("onnx", reason="needs the [convert] extra")

from gguf import GGUFWriter
from safetensors.numpy import save_file

from rerank.converters import cli, hf_checkpoint, memory
from rerank.converters.errors import CheckpointError, InsufficientMemoryError
from rerank.converters.gguf_file import GgufFile

MEMINFO = """MemTotal:       24683652 kB
MemFree:         1234567 kB
MemAvailable:   21340700 kB
Buffers:          123456 kB
"""


def test_estimate_matches_the_measured_conversions() -> None:
    """Within 5 % of the measured peaks it was derived from (see converters/memory.py)."""
    for parameters, measured in ((568_000_000, 16.0e9), (111_208_705, 3.66e9), (271_809, 0.54e9)):
        estimate = memory.estimated_peak_bytes(parameters)
        assert measured * 0.95 <= estimate <= measured * 1.12, (parameters, estimate)


def test_available_bytes_reads_memavailable(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text(MEMINFO)
    assert memory.available_bytes(tmp_path / "meminfo") == 21340700 * 1024
    (tmp_path / "old").write_text("MemTotal: 1 kB\nMemFree: 1 kB\n")
    assert memory.available_bytes(tmp_path / "old") is None
    assert memory.available_bytes(tmp_path / "missing") is None


def test_refuses_naming_both_figures() -> None:
    lines: list[str] = []
    with pytest.raises(InsufficientMemoryError) as refused:
        memory.check_fits(568_000_000, lines.append, available=8_000_000_000)
    message = str(refused.value)
    assert "568M parameters" in message and "16.5 GB" in message and "8.0 GB is available" in message
    assert "--skip-memory-check" in message and "\n" not in message
    memory.check_fits(568_000_000, lines.append, available=20_000_000_000)
    assert lines[-1] == "memory: 568M parameters, about 16.5 GB at the peak; 20.0 GB available"


def test_count_parameters_reads_only_the_headers(tmp_path: Path) -> None:
    tensors = {"a.weight": np.zeros((3, 5), np.float32), "b.bias": np.zeros(7, np.float16)}
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    assert hf_checkpoint.count_parameters(tmp_path) == 3 * 5 + 7
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        hf_checkpoint.count_parameters(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 400)
    assert hf_checkpoint.count_parameters(tmp_path) == 100


def test_gguf_parameter_count(tmp_path: Path) -> None:
    writer = GGUFWriter(str(tmp_path / "t.gguf"), "bert")
    writer.add_tensor("a.weight", np.zeros((4, 32), np.float32))
    writer.add_tensor("b.bias", np.zeros(32, np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert GgufFile.open(tmp_path / "t.gguf").parameter_count() == 4 * 32 + 32


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A folder with weights, whose reading is a failure of the test."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_file({"w": np.zeros((1000, 1000), np.float32)}, str(folder / "model.safetensors"))
    return folder


def _reached(source: str) -> None:
    raise CheckpointError("weights were read")


def test_cli_refuses_before_reading_weights(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda: 100_000_000)
    monkeypatch.setattr(hf_checkpoint, "load_checkpoint", _reached)
    assert cli.main([str(checkpoint), "--out", str(tmp_path / "models")]) == 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("rerank-convert: error: converting 1M parameters needs about 0.6 GB")
    assert "only 0.1 GB is available" in last
    assert not (tmp_path / "models").exists()


def test_skip_memory_check(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda: 100_000_000)
    monkeypatch.setattr(hf_checkpoint, "load_checkpoint", _reached)
    assert cli.main([str(checkpoint), "--out", str(tmp_path / "models"), "--skip-memory-check"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == "rerank-convert: error: weights were read"
