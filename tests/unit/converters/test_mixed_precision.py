"""The mixed-bf16 rewrite: which matrix products of which layers get bf16 inputs, and that the
graph around them is unchanged (same outputs, valid ONNX)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx", reason="needs the [convert] extra")

import onnx
from onnx import TensorProto, helper, numpy_helper

from rerank.converters.mixed_precision import RECIPES, Recipe, to_mixed_bf16
from rerank.service.backends.openvino import BF16_UNTIL


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


def test_the_ladder_is_fastest_first() -> None:
    # Split recipes first (all but their spared layers in bf16), then the casts; within each,
    # every recipe keeps more of the graph in fp32 than the one before.
    assert [r.split for r in RECIPES] == sorted((r.split for r in RECIPES), reverse=True)
    for split in (True, False):
        counts = [to_mixed_bf16(graph(6), r) - (r.split and r.spare_last) for r in RECIPES if r.split == split]
        spared = [r.spare_last for r in RECIPES if r.split == split]
        assert counts == sorted(counts, reverse=True) and spared == sorted(spared) and counts[-1] > 0


def in_pairs(model: onnx.ModelProto) -> list[str]:
    """Names of the weight products rewritten as a bf16 pair (their input's high part)."""
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[0].endswith("_bf16_high")]


def test_a_split_recipe_cuts_before_its_spared_layers_and_pairs_their_products() -> None:
    model = graph()
    # Layers 0 and 1 run at bf16 precision (2 x 2 products), layer 2's qkv as a bf16 pair.
    assert to_mixed_bf16(model, Recipe("split", frozenset({"qkv"}), 1, split=True)) == 5
    assert in_pairs(model) == ["l2_qkv_8"] and not in_bf16(model)
    (cut,) = [n for n in model.graph.node if BF16_UNTIL in n.output]
    assert cut.name == "l1_ffn_ln_7"  # the hidden state entering the first spared layer
    assert [n.name for n in model.graph.node if BF16_UNTIL in n.input] == [
        "l2_qkv_bf16_high",
        "l2_qkv_bf16_low_f32",
        "l2_scores_9",
    ]
    onnx.checker.check_model(model, full_check=True)
    with pytest.raises(ValueError, match="at least one layer before the cut"):
        to_mixed_bf16(graph(), Recipe("all spared", frozenset(), 3, split=True))


def test_a_bf16_pair_is_as_close_to_fp32_as_a_bf16_weight_allows() -> None:
    # high @ w' + low @ w' keeps the input's bits that one bf16 product rounds away: its error is
    # the weight's rounding only (~1e-3 relative, averaging out over the sum) far below rounding
    # both sides.
    ov = pytest.importorskip("openvino")
    from rerank.converters.mixed_precision import _in_bf16, _in_pairs

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 256)).astype(np.float32)
    w = rng.standard_normal((256, 256)).astype(np.float32)
    exact = x.astype(np.float64) @ w.astype(np.float64)
    w_bf16 = (w.view(np.uint32) + 0x7FFF + ((w.view(np.uint32) >> 16) & 1) & 0xFFFF0000).view(np.float32)
    weights_only = x.astype(np.float64) @ w_bf16.astype(np.float64)

    def run(rewrite) -> np.ndarray:  # type: ignore[no-untyped-def]
        node = helper.make_node("MatMul", ["x", "w"], ["y"], name="l0_kv_1")
        io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [64, 256]) for n in ("x", "y")]
        g = helper.make_graph(rewrite(node), "g", [io[0]], [io[1]], [numpy_helper.from_array(w, "w")])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        compiled = ov.Core().compile_model(
            ov.Core().read_model(model.SerializeToString(), b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
        )
        return np.asarray(compiled({"x": x})[compiled.output(0)], dtype=np.float64)

    scale = np.abs(exact).max()
    pair, single = np.abs(run(_in_pairs) - exact).max() / scale, np.abs(run(_in_bf16) - exact).max() / scale
    assert np.abs(run(_in_pairs) - weights_only).max() / scale < 1e-4 < pair < single / 2


def test_a_graph_not_of_our_builder_is_refused() -> None:
    model = graph()
    for node in model.graph.node:
        node.name = "anonymous"
    with pytest.raises(ValueError, match="no layer weight products"):
        to_mixed_bf16(model, RECIPES[0])
