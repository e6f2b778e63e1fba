"""The mixed-bf16 rewrite: which matrix products of which layers get bf16 inputs, and that the
graph around them is unchanged (same outputs, valid ONNX)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx", reason="needs the [convert] extra")

import onnx
from onnx import TensorProto, helper, numpy_helper

from rerank.converters.mixed_precision import RECIPES, Recipe, to_mixed_bf16


def graph(layers: int = 3) -> onnx.ModelProto:
    """``layers`` layers in our builder's names, each a weight product (``qkv``, ``up``) and an
    activation product (``scores``), then a head product."""
    nodes, weights, x = [], [], "x"
    for i in range(layers):
        for kind in ("qkv", "scores", "up"):
            out = f"t{i}_{kind}"
            if kind == "scores":
                nodes.append(helper.make_node("MatMul", [x, x], [out], name=f"l{i}_{kind}_{len(nodes)}"))
            else:
                weights.append(numpy_helper.from_array(np.eye(4, dtype=np.float32), f"w{i}_{kind}"))
                nodes.append(helper.make_node("MatMul", [x, f"w{i}_{kind}"], [out], name=f"l{i}_{kind}_{len(nodes)}"))
            x = out
    weights.append(numpy_helper.from_array(np.eye(4, dtype=np.float32), "w_head"))
    nodes.append(helper.make_node("MatMul", [x, "w_head"], ["y"], name="head_out_99"))
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 4]) for n in ("x", "y")]
    return helper.make_model(
        helper.make_graph(nodes, "g", [io[0]], [io[1]], weights), opset_imports=[helper.make_opsetid("", 17)]
    )


def in_bf16(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMuls whose inputs are both cast to bf16."""
    casts = {n.output[0] for n in model.graph.node if n.op_type == "Cast" and n.attribute[0].i == TensorProto.BFLOAT16}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and set(n.input) <= casts]


@pytest.mark.parametrize(
    ("recipe", "expected"),
    [
        (
            Recipe("all", frozenset({"qkv", "up"}), 0),
            ["l0_qkv_0", "l0_up_2", "l1_qkv_3", "l1_up_5", "l2_qkv_6", "l2_up_8"],
        ),
        (Recipe("spare one", frozenset({"qkv", "up"}), 1), ["l0_qkv_0", "l0_up_2", "l1_qkv_3", "l1_up_5"]),
        (Recipe("up, spare two", frozenset({"up"}), 2), ["l0_up_2"]),
    ],
)
def test_only_the_recipes_weight_products_take_bf16(recipe: Recipe, expected: list[str]) -> None:
    model = graph()
    assert to_mixed_bf16(model, recipe) == len(expected)
    assert in_bf16(model) == expected  # never the activation products, the head, the spared layers
    onnx.checker.check_model(model, full_check=True)  # types line up: bf16 in, float out
    assert [o.name for o in model.graph.output] == ["y"]


def test_the_ladder_is_fastest_first() -> None:
    counts = [to_mixed_bf16(graph(6), recipe) for recipe in RECIPES]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1] > 0


def test_a_graph_not_of_our_builder_is_refused() -> None:
    model = graph()
    for node in model.graph.node:
        node.name = "anonymous"
    with pytest.raises(ValueError, match="no layer weight products"):
        to_mixed_bf16(model, RECIPES[0])
