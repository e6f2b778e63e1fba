"""Small ONNX graphs for tests of what saves, loads and maps graphs (needs the [convert] extra:
import it after ``pytest.importorskip("onnx")``)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def matmul(rows: int = 256) -> onnx.ModelProto:
    """y = x @ w for a seeded ``[rows, rows]`` float weight (256 KiB at the default)."""
    w = np.random.default_rng(0).standard_normal((rows, rows)).astype(np.float32)
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, rows]) for n in ("x", "y")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [io[0]], [io[1]], [numpy_helper.from_array(w, "w")]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
