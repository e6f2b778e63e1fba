"""int8 weights (variant ov-int8-dynamic): which tensors become int8, on which axis their scales
lie, and that the graph computes what it did within the rounding (ONNX Runtime runs both)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx", reason="needs the [convert] extra")

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from rerank.converters.int8_weights import compress, int8_channels

VOCAB, HIDDEN, FFN, POSITIONS = 50, 16, 24, 12


def graph(rng: np.random.Generator, *, shared_weight: bool = False) -> onnx.ModelProto:
    """Token ids -> an embedding lookup plus a position table looked up by computed positions ->
    a layer's two weight products in our builder's names -> a one-column head."""
    # Channels of very different sizes: a scale shared across them shows up in the outputs.
    spread = np.logspace(-2, 1, FFN, dtype=np.float32)
    tensors = {
        "embed": (rng.normal(size=(VOCAB, HIDDEN)) * np.logspace(-2, 1, VOCAB)[:, None]).astype(np.float32),
        "positions_table": rng.normal(size=(POSITIONS, HIDDEN)).astype(np.float32),
        "w_up": rng.normal(size=(HIDDEN, FFN)).astype(np.float32) * spread,
        "w_down": (rng.normal(size=(FFN, HIDDEN)) / np.sqrt(FFN)).astype(np.float32),
        "w_head": rng.normal(size=(HIDDEN, 1)).astype(np.float32),
        "zero": np.zeros(1, np.int64),
        "one": np.ones(1, np.int64),
    }
    nodes = [
        helper.make_node("Gather", ["embed", "input_ids"], ["x0"], name="embed_1", axis=0),
        helper.make_node("Shape", ["input_ids"], ["shape"], name="shape_2", start=1, end=2),
        helper.make_node("Squeeze", ["shape", "zero"], ["length"], name="squeeze_3"),
        helper.make_node("Range", ["zero_scalar", "length", "one_scalar"], ["positions"], name="range_4"),
        helper.make_node("Gather", ["positions_table", "positions"], ["p"], name="pos_5", axis=0),
        helper.make_node("Add", ["x0", "p"], ["x"], name="add_6"),
        helper.make_node("MatMul", ["x", "w_up"], ["h"], name="l0_up_7"),
        helper.make_node("Relu", ["h"], ["a"], name="l0_act_8"),
        helper.make_node("MatMul", ["a", "w_down"], ["y"], name="l0_down_9"),
        helper.make_node("MatMul", ["y", "w_head"], ["logits"], name="head_out_10"),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", 1])]
    if shared_weight:  # w_up read by a layer product and by something else as well
        nodes.append(helper.make_node("ReduceSum", ["w_up"], ["w_up_sum"], name="sum_11"))
        outputs.append(helper.make_tensor_value_info("w_up_sum", TensorProto.FLOAT, [1, 1]))
    initializers = [numpy_helper.from_array(v, k) for k, v in tensors.items()]
    initializers += [numpy_helper.from_array(np.array(0, np.int64), "zero_scalar")]
    initializers += [numpy_helper.from_array(np.array(1, np.int64), "one_scalar")]
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    model = helper.make_model(
        helper.make_graph(nodes, "g", [ids], outputs, initializers), opset_imports=[helper.make_opsetid("", 17)]
    )
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["logits"], {"input_ids": ids})[0])


def dtypes(model: onnx.ModelProto) -> dict[str, int]:
    return {t.name: t.data_type for t in model.graph.initializer}


@pytest.mark.parametrize("axis", [0, 1])
def test_each_output_channel_is_rounded_with_its_own_scale(axis: int) -> None:
    rng = np.random.default_rng(1)
    weights = rng.normal(size=(7, 9)).astype(np.float32) * np.logspace(-3, 2, 9 if axis == 1 else 7).reshape(
        (1, -1) if axis == 1 else (-1, 1)
    )
    weights[..., 0] = 0.0 if axis == 0 else weights[..., 0]
    quantised, scale = int8_channels(weights, axis)
    assert quantised.dtype == np.int8 and scale.dtype == np.float32
    assert scale.shape == (weights.shape[axis],)
    channels = np.moveaxis(weights, axis, 0)
    rounded = np.moveaxis(quantised, axis, 0).astype(np.float32) * scale[:, None]
    for channel, back in zip(channels, rounded, strict=True):
        step = np.abs(channel).max() / 127
        # Each value within half its own channel's step, and the channel's largest one exact.
        assert np.all(np.abs(back - channel) <= step / 2 + 1e-7 * np.abs(channel).max())
        if step:
            assert np.abs(back).max() == pytest.approx(np.abs(channel).max(), rel=1e-6)
    assert np.abs(quantised).max() <= 127


def test_an_all_zero_channel_stays_zero() -> None:
    quantised, scale = int8_channels(np.zeros((3, 2), np.float32), 1)
    assert not quantised.any() and np.all(scale > 0)


def dequantised(model: onnx.ModelProto, names: list[str]) -> dict[str, np.ndarray]:
    """The tensors ``names`` as the compressed graph computes them (its DequantizeLinear outputs)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    values = session.run(names, {"input_ids": np.zeros((1, 2), np.int64)})
    return dict(zip(names, values, strict=True))


def test_layer_products_and_the_token_table_become_int8_the_rest_stays_fp32() -> None:
    rng = np.random.default_rng(0)
    model = graph(rng)
    original = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    ids = rng.integers(0, VOCAB, size=(3, POSITIONS))
    before = run(model, ids)
    assert compress(model) == 3
    onnx.checker.check_model(model)
    types = dtypes(model)
    for name in ("embed", "w_up", "w_down"):
        assert (
            name not in types
            and types[f"{name}_int8"] == TensorProto.INT8
            and types[f"{name}_scale"] == TensorProto.FLOAT
        )
    # Looked up by computed positions, and the score's own head: fp32.
    assert types["positions_table"] == TensorProto.FLOAT and types["w_head"] == TensorProto.FLOAT
    # Output channels: a product's columns, the table's rows; each within half its own step.
    back = dequantised(model, ["embed", "w_up", "w_down"])
    for name, axis in (("embed", 0), ("w_up", 1), ("w_down", 1)):
        for channel, value in zip(np.moveaxis(original[name], axis, 0), np.moveaxis(back[name], axis, 0), strict=True):
            assert np.max(np.abs(value - channel)) <= np.abs(channel).max() / 254 * 1.0001, name
    after = run(model, ids)
    assert not np.array_equal(after, before)
    assert np.max(np.abs(after - before)) <= 0.02 * np.max(np.abs(before))


def test_a_weight_read_elsewhere_as_well_stays_fp32() -> None:
    model = graph(np.random.default_rng(0), shared_weight=True)
    assert compress(model) == 2
    assert dtypes(model)["w_up"] == TensorProto.FLOAT


def test_products_outside_our_layers_stay_fp32() -> None:
    """Only our graph builders' layer products (``l<i>_...``) are known to be weights times
    activations; in a graph without them only the token table is stored in int8."""
    model = graph(np.random.default_rng(0))
    for node in model.graph.node:
        node.name = node.name.replace("l0_", "layer0_")
    assert compress(model) == 1
    types = dtypes(model)
    assert types["w_up"] == types["w_down"] == TensorProto.FLOAT and types["embed_int8"] == TensorProto.INT8
