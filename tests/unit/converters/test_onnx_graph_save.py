"""Where a saved graph's weights go: inside it, or beside it in ``<graph>.data`` (what OpenVINO
maps instead of copying), and that both runtimes read either form alike."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx", reason="needs the [convert] extra")

import onnxruntime as ort

from rerank.converters import onnx_graph
from tests.support.onnx_graphs import matmul


def outputs(path) -> list[np.ndarray]:
    """``path``'s output for the same input under ONNX Runtime and, where installed, OpenVINO."""
    x = np.random.default_rng(1).standard_normal((3, 256)).astype(np.float32)
    got = [ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]]
    try:
        import openvino as ov
    except ImportError:
        return got
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return [*got, np.asarray(compiled.create_infer_request().infer({"x": x})[compiled.output(0)])]


def test_weights_over_the_limit_go_beside_the_graph_and_read_the_same(tmp_path, monkeypatch) -> None:
    whole, beside = tmp_path / "whole" / "model.onnx", tmp_path / "beside" / "model.onnx"
    whole.parent.mkdir(), beside.parent.mkdir()
    onnx_graph.save(matmul(), whole)  # 256 KiB of weights: under the limit
    monkeypatch.setattr(onnx_graph, "EXTERNAL_WEIGHTS_BYTES", 64 << 10)
    onnx_graph.save(matmul(), beside)
    assert not (whole.parent / "model.onnx.data").exists()
    data = beside.parent / "model.onnx.data"
    assert data.stat().st_size == 256 * 256 * 4 and beside.stat().st_size < 4096
    assert data.stat().st_mode & 0o044 == 0o044  # model folders are shared: readable by others
    for a, b in zip(outputs(whole), outputs(beside), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_graph_saved_whole_over_one_with_weights_beside_leaves_none_behind(tmp_path, monkeypatch) -> None:
    path = tmp_path / "model.int8.onnx"
    monkeypatch.setattr(onnx_graph, "EXTERNAL_WEIGHTS_BYTES", 64 << 10)
    onnx_graph.save(matmul(), path)
    monkeypatch.setattr(onnx_graph, "EXTERNAL_WEIGHTS_BYTES", 1 << 30)
    onnx_graph.save(matmul(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx"]
    monkeypatch.setattr(onnx_graph, "EXTERNAL_WEIGHTS_BYTES", 64 << 10)
    onnx_graph.save(matmul(), path)
    onnx_graph.remove(path)
    assert list(tmp_path.iterdir()) == []
