"""Mixed bf16: the weight matrix products of most layers in bf16, the rest of the graph in fp32.

OpenVINO's bf16 inference precision puts every matrix product in bf16: fast, but on some
trained encoders it fails the gate (docs/parity.md), and OpenVINO's CPU plugin ignores the
runtime hint that should keep chosen nodes in fp32. So the choice is written into the graph
instead: each chosen MatMul gets ``Cast(bfloat16)`` on both inputs and ``Cast(float)`` on its
output, and the graph runs at precision f32, where OpenVINO executes exactly those products in
bf16 (its oneDNN kernels on AVX-512 BF16 or AMX) and everything else (attention scores, softmax,
LayerNorm, the head) in fp32.

Which products: a short ladder of recipes, fastest first (:data:`RECIPES`); the converter gates
each in turn and keeps the first that passes (:func:`rerank.converters.variants.write_variants`). The
layers are our graph builder's (:mod:`rerank.converters.onnx_graph` names a layer's nodes ``l<i>_...``;
the head's are ``head_...``), and only products with a weight (an initializer) change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

_LAYER = re.compile(r"^l(\d+)_([a-z]+)_")


@dataclass(frozen=True)
class Recipe:
    """Which weight products of which layers run in bf16."""

    name: str
    kinds: frozenset[str]
    """Our builder's names for a layer's weight products: ``qkv``, ``o`` (attention), ``up``,
    ``down`` (feed-forward)."""
    spare_last: int
    """How many of the last layers stay fp32 (where an error has the least room to average out)."""

    def chooses(self, layer: int, kind: str, layers: int) -> bool:
        return kind in self.kinds and layer < layers - self.spare_last


ALL_PRODUCTS = frozenset({"qkv", "o", "up", "down"})
RECIPES = (
    Recipe("every layer", ALL_PRODUCTS, 0),
    Recipe("all but the last layer", ALL_PRODUCTS, 1),
    Recipe("feed-forward, all but the last layer", frozenset({"up", "down"}), 1),
    Recipe("feed-forward, all but the last two layers", frozenset({"up", "down"}), 2),
)
"""Fastest first (each spares more of the graph than the one before); timings: docs/performance.md."""


def weight_products(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, int, str]]:
    """The MatMuls with a weight initializer that belong to a layer: (node, layer, kind)."""
    weights = {t.name for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        match = _LAYER.match(node.name)
        if node.op_type == "MatMul" and match and len(node.input) == 2 and node.input[1] in weights:
            found.append((node, int(match.group(1)), match.group(2)))
    return found


def to_mixed_bf16(model: onnx.ModelProto, recipe: Recipe) -> int:
    """Rewrites ``model`` in place so that ``recipe``'s products run in bf16; returns how many."""
    products = weight_products(model)
    if not products:
        raise ValueError("the graph has no layer weight products (l<i>_... MatMuls) to put in bf16")
    layers = 1 + max(layer for _, layer, _ in products)
    chosen = {node.name for node, layer, kind in products if recipe.chooses(layer, kind, layers)}
    rewritten: list[onnx.NodeProto] = []
    for node in model.graph.node:
        rewritten += _in_bf16(node) if node.name in chosen else [node]
    del model.graph.node[:]
    model.graph.node.extend(rewritten)
    return len(chosen)


def _in_bf16(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """``node`` (a MatMul) with bf16 inputs and its output cast back to float, same names out."""
    cast = _namer(node.name)
    inputs = [cast(f"in{i}") for i in range(2)]
    product = cast("product")
    return [
        *(
            helper.make_node("Cast", [source], [name], name=name, to=TensorProto.BFLOAT16)
            for source, name in zip(node.input, inputs, strict=True)
        ),
        helper.make_node("MatMul", inputs, [product], name=node.name),
        helper.make_node("Cast", [product], list(node.output), name=cast("out"), to=TensorProto.FLOAT),
    ]


def _namer(base: str) -> Callable[[str], str]:
    return lambda suffix: f"{base}_bf16_{suffix}"
