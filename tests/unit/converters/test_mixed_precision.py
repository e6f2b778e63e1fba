"""The mixed-bf16 rewrite: which matrix products of which layers get bf16 inputs, and that the
graph around them is unchanged (same outputs, valid ONNX)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx", reason="needs the [convert] extra")

import onnx
from onnx import TensorProto, helper, numpy_helper

from rerank.converters.mixed_precision import RECIPES, SPLIT_RECIPES, Recipe, to_mixed_bf16
from rerank.service.model_folder import BF16_UNTIL


def graph(layers: int = 3) -> onnx.ModelProto:
    """``layers`` layers in our builder's names, each a weight product (``qkv``, ``up``), an
    activation product (``scores``) and its output LayerNorm (``ffn_ln``), then a head product."""
    nodes, weights, x = [], [], "x"
    for i in range(layers):
        for kind in ("qkv", "scores", "up", "ffn_ln"):
            out = f"t{i}_{kind}"
            name = f"l{i}_{kind}_{len(nodes)}"
            if kind == "scores":
                nodes.append(helper.make_node("MatMul", [x, x], [out], name=name))
            elif kind == "ffn_ln":
                nodes.append(helper.make_node("LayerNormalization", [x, "gamma"], [out], name=name, axis=-1))
            else:
                weights.append(numpy_helper.from_array(np.eye(4, dtype=np.float32), f"w{i}_{kind}"))
                nodes.append(helper.make_node("MatMul", [x, f"w{i}_{kind}"], [out], name=name))
            x = out
    weights.append(numpy_helper.from_array(np.ones(4, dtype=np.float32), "gamma"))
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
            ["l0_qkv_0", "l0_up_2", "l1_qkv_4", "l1_up_6", "l2_qkv_8", "l2_up_10"],
        ),
        (Recipe("spare one", frozenset({"qkv", "up"}), 1), ["l0_qkv_0", "l0_up_2", "l1_qkv_4", "l1_up_6"]),
        (Recipe("up, spare two", frozenset({"up"}), 2), ["l0_up_2"]),
    ],
)
def test_only_the_recipes_weight_products_take_bf16(recipe: Recipe, expected: list[str]) -> None:
    model = graph()
    assert to_mixed_bf16(model, recipe) == len(expected)
    assert in_bf16(model) == expected  # never the activation products, the head, the spared layers
    onnx.checker.check_model(model, full_check=True)  # types line up: bf16 in, float out
    assert [o.name for o in model.graph.output] == ["y"]


def test_each_ladder_is_fastest_first() -> None:
    # Each recipe keeps more of the graph in fp32 than the one before: the casts put fewer
    # products in bf16, the splits cut earlier.
    counts = [to_mixed_bf16(graph(6), recipe) for recipe in RECIPES]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1] > 0
    assert all(recipe.split for recipe in SPLIT_RECIPES)
    spared = [recipe.spare_last for recipe in SPLIT_RECIPES]
    assert spared == sorted(set(spared)) and spared[0] == 1


def test_a_split_recipe_cuts_before_its_spared_layers_and_changes_nothing_else() -> None:
    model, before = graph(), graph()
    # Layers 0 and 1 run at bf16 precision (2 x 2 weight products), layer 2 stays as it was.
    assert to_mixed_bf16(model, Recipe("split", frozenset(), 1, split=True)) == 4
    assert not in_bf16(model) and [n.name for n in model.graph.node] == [n.name for n in before.graph.node]
    (cut,) = [n for n in model.graph.node if BF16_UNTIL in n.output]
    assert cut.name == "l1_ffn_ln_7"  # the hidden state entering the first spared layer
    assert [n.name for n in model.graph.node if BF16_UNTIL in n.input] == ["l2_qkv_8"]
    onnx.checker.check_model(model, full_check=True)
    with pytest.raises(ValueError, match="at least one layer before the cut"):
        to_mixed_bf16(graph(), Recipe("all spared", frozenset(), 3, split=True))


def test_a_graph_not_of_our_builder_is_refused() -> None:
    model = graph()
    for node in model.graph.node:
        node.name = "anonymous"
    with pytest.raises(ValueError, match="no layer weight products"):
        to_mixed_bf16(model, RECIPES[0])


def decoder_graph(layers: int = 3) -> onnx.ModelProto:
    """``layers`` pre-norm layers as the Qwen3 builder names them: a weight product and a
    residual sum for attention (``l<i>_attn_out``) and for the feed-forward (``l<i>_out``)."""
    nodes, weights, x = [], [], "x"
    for i in range(layers):
        for kind, sum_name in (("qkv_q", "attn_out"), ("down", "out")):
            weights.append(numpy_helper.from_array(np.eye(4, dtype=np.float32), f"w{i}_{kind}"))
            product = f"l{i}_{kind}_{len(nodes)}"
            nodes.append(helper.make_node("MatMul", [x, f"w{i}_{kind}"], [product], name=product))
            total = f"l{i}_{sum_name}_{len(nodes)}"
            nodes.append(helper.make_node("Add", [x, product], [total], name=total))
            x = total
    nodes.append(helper.make_node("Identity", [x], ["y"], name="head_out_99"))
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 4]) for n in ("x", "y")]
    return helper.make_model(
        helper.make_graph(nodes, "g", [io[0]], [io[1]], weights), opset_imports=[helper.make_opsetid("", 17)]
    )


def test_a_decoder_is_cut_at_its_layers_residual_sum() -> None:
    model = decoder_graph()
    assert to_mixed_bf16(model, SPLIT_RECIPES[0]) == 4  # layers 0 and 1, two products each
    (cut,) = [n for n in model.graph.node if BF16_UNTIL in n.output]
    assert cut.name == "l1_out_7"  # not the attention's residual sum, l1_attn_out_5
    assert sorted(n.name for n in model.graph.node if BF16_UNTIL in n.input) == ["l2_attn_out_9", "l2_qkv_q_8"]
    onnx.checker.check_model(model, full_check=True)
