"""Int8 weights for OpenVINO (variant ``ov-int8-dynamic``): a quarter of the weights' bytes, products in int8.

The weight matrix of each layer's products (:func:`rerank.converters.mixed_precision.weight_products`)
and the token embedding table are stored as int8 with one fp32 scale per output channel (per
row for the table), symmetric: a channel's largest |w| maps to 127. ``DequantizeLinear`` turns
them back into the original tensor's name, so the rest of the graph is unchanged.

OpenVINO's CPU plugin keeps weights of this form in int8 and expands them inside its matrix
kernels (no fp32 copy), and at run time rounds each product's activations to int8 per group of
values (``DYNAMIC_QUANTIZATION_GROUP_SIZE``, :mod:`rerank.service.backends.openvino`), so the
products run on the CPU's int8 units: ONNX Runtime's dynamic int8 (variant ``int8``), done by
OpenVINO. Nothing is calibrated, so it takes seconds whatever the model's size. The head (one
or two output channels, read straight as the score) and tables indexed by computed positions
(rotary angles, position embeddings) stay fp32.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rerank.converters.mixed_precision import weight_products

LEVELS = 127
"""A channel's largest |w| maps to this (symmetric: -128 is never used, so negation is exact)."""


def int8_channels(weights: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``weights`` (2-D) as int8 and the fp32 scale of each slice along ``axis`` (the output
    channels: 1 for a product's ``[in, out]`` matrix, 0 for a ``[rows, width]`` table)."""
    reduce = 1 - axis
    scale = np.abs(weights).max(axis=reduce) / LEVELS
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)  # an all-zero channel stays zero
    shape = [1, 1]
    shape[axis] = -1
    quantised = np.clip(np.rint(weights / scale.reshape(shape)), -LEVELS, LEVELS).astype(np.int8)
    return quantised, scale


def _targets(model: onnx.ModelProto) -> dict[str, int]:
    """Initializer -> the axis of its output channels, for every tensor this variant stores in
    int8: the matrices of layer weight products and 2-D tables looked up by a graph input (token
    ids); fp32 2-D tensors only. A tensor read in any other way as well stays fp32."""
    matrices = {t.name for t in model.graph.initializer if len(t.dims) == 2 and t.data_type == TensorProto.FLOAT}
    ids = {i.name for i in model.graph.input}
    products = {node.name for node, _, _ in weight_products(model)}
    roles: dict[str, set[int]] = {}
    for node in model.graph.node:
        for position, name in enumerate(node.input):
            if name in matrices:
                if node.name in products and position == 1:
                    role = 1
                elif node.op_type == "Gather" and position == 0 and node.input[1] in ids:
                    role = 0
                else:
                    role = -1
                roles.setdefault(name, set()).add(role)
    return {name: min(found) for name, found in roles.items() if len(found) == 1 and -1 not in found}


def compress(model: onnx.ModelProto) -> int:
    """Rewrites ``model`` in place with int8 weights; returns how many tensors it stored in int8."""
    targets = _targets(model)
    if not targets:
        return 0
    initializers = model.graph.initializer
    kept = [t for t in initializers if t.name not in targets]
    added: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    for tensor in initializers:
        if tensor.name not in targets:
            continue
        axis = targets[tensor.name]
        quantised, scale = int8_channels(numpy_helper.to_array(tensor).astype(np.float32, copy=False), axis)
        added += [
            numpy_helper.from_array(quantised, f"{tensor.name}_int8"),
            numpy_helper.from_array(scale, f"{tensor.name}_scale"),
        ]
        nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{tensor.name}_int8", f"{tensor.name}_scale"],
                [tensor.name],
                name=f"{tensor.name}_dequantize",
                axis=axis,
            )
        )
    del initializers[:]
    initializers.extend(kept + added)
    # Their inputs are initializers only, so they may run first.
    rest = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes + rest)
    return len(nodes)
