"""bench.memory's parts that need no model: the whole-graph copy it compares with, and the
resident set it reads."""

from __future__ import annotations

import pytest

pytest.importorskip("onnx", reason="needs the [convert] extra")

import onnx

from bench import memory
from rerank.converters import onnx_graph
from tests.support.onnx_graphs import matmul


def test_the_whole_copy_holds_the_weights_inside_its_graph(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    monkeypatch.setattr(onnx_graph, "EXTERNAL_WEIGHTS_BYTES", 64 << 10)
    onnx_graph.save(matmul(), folder / "model.onnx")
    (folder / "rerank.json").write_text("{}")
    (tmp_path / "into").mkdir()
    copy = memory.whole_copy(folder, tmp_path / "into")
    assert sorted(p.name for p in copy.iterdir()) == ["model.onnx", "rerank.json"]
    loaded = onnx.load(str(copy / "model.onnx"), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in loaded.graph.initializer)
    assert onnx.load(str(copy / "model.onnx")) == onnx.load(str(folder / "model.onnx"))


def test_the_resident_set_is_anonymous_plus_mapped() -> None:
    found = memory.resident()
    assert found["rss"] == found["anon"] + found["file"] and found["anon"] > 0
