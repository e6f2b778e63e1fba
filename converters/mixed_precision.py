"""Mixed bf16: most of the graph in bf16, the parts where bf16 moves the rankings in fp32.

OpenVINO's bf16 inference precision puts every matrix product (and the element-wise work
between them) in bf16: fast, but on some trained encoders it fails the gate (docs/parity.md),
and OpenVINO's CPU plugin ignores the marks that should keep chosen nodes in fp32. So the choice
is written into the graph, in one of two ways (:class:`Recipe`):

* **split** (:attr:`Recipe.split`): the graph is cut before its last layers at a tensor named
  :data:`~rerank.service.backends.openvino.BF16_UNTIL`; the server compiles what computes it at
  precision bf16 and the rest at f32. In the layers after the cut, the chosen weight products
  run as **bf16 pairs**: the input split into a bf16 high part and a bf16 remainder, both
  multiplied by the bf16 weights and summed in fp32, so the input keeps ~16 bits of mantissa
  at two AMX products' cost (rounding a product's *input* to bf16 is what moves the rankings
  most; rounding its weights or output moves them far less). The last layer computes only the
  first token's row (:mod:`rerank.converters.onnx_graph`), so its keys and values are what
  costs there.
* **casts**: each chosen product gets ``Cast(bfloat16)`` on both inputs and ``Cast(float)`` on
  its output, and the whole graph runs at precision f32, where OpenVINO executes exactly those
  products in bf16 and everything else (attention, softmax, LayerNorm, the head) in fp32.

Which: a ladder of recipes, fastest first (:data:`RECIPES`); the converter gates each in turn and
keeps the first that passes (:func:`rerank.converters.variants.write_variants`). The layers are
our graph builder's (:mod:`rerank.converters.onnx_graph` names a layer's nodes ``l<i>_...``; the
head's are ``head_...``), and only products with a weight (an initializer) change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

from rerank.service.backends.openvino import BF16_UNTIL

_LAYER = re.compile(r"^l(\d+)_([a-z]+)_")
_KINDS = {"q": "qkv", "kv": "qkv"}
"""The last layer's query and key-value products (it computes queries for one token) count as ``qkv``."""


@dataclass(frozen=True)
class Recipe:
    """Which weight products of which layers run in bf16, and how."""

    name: str
    kinds: frozenset[str]
    """Our builder's names for a layer's weight products: ``qkv``, ``o`` (attention), ``up``,
    ``down`` (feed-forward)."""
    spare_last: int
    """How many of the last layers stay fp32 (where an error has the least room to average out)."""
    split: bool = False
    """Split: everything before the spared layers in bf16, their ``kinds`` products as bf16
    pairs. Casts (False): the ``kinds`` products of the other layers in bf16, the rest fp32."""

    def chooses(self, layer: int, kind: str, layers: int) -> bool:
        spared = layer >= layers - self.spare_last
        return kind in self.kinds and spared == self.split


ALL_PRODUCTS = frozenset({"qkv", "o", "up", "down"})
RECIPES = (
    Recipe("bf16 but the last layer, its query, key and value products as bf16 pairs", frozenset({"qkv"}), 1, True),
    Recipe("bf16 but the last layer", frozenset(), 1, True),
    Recipe("bf16 but the last two layers, their products as bf16 pairs", ALL_PRODUCTS, 2, True),
    Recipe("every layer", ALL_PRODUCTS, 0),
    Recipe("all but the last layer", ALL_PRODUCTS, 1),
    Recipe("feed-forward, all but the last layer", frozenset({"up", "down"}), 1),
    Recipe("feed-forward, all but the last two layers", frozenset({"up", "down"}), 2),
)
"""Fastest first (each keeps more of the graph in fp32 than the one before, in its kind);
timings: docs/performance.md."""


def weight_products(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, int, str]]:
    """The MatMuls with a weight initializer that belong to a layer: (node, layer, kind)."""
    weights = {t.name for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        match = _LAYER.match(node.name)
        if node.op_type == "MatMul" and match and len(node.input) == 2 and node.input[1] in weights:
            found.append((node, int(match.group(1)), _KINDS.get(match.group(2), match.group(2))))
    return found


def to_mixed_bf16(model: onnx.ModelProto, recipe: Recipe) -> int:
    """Rewrites ``model`` in place for ``recipe``; returns how many weight products run in bf16
    (split: before the cut, and the pairs after it)."""
    products = weight_products(model)
    if not products:
        raise ValueError("the graph has no layer weight products (l<i>_... MatMuls) to put in bf16")
    layers = 1 + max(layer for _, layer, _ in products)
    chosen = {node.name for node, layer, kind in products if recipe.chooses(layer, kind, layers)}
    rewrite = _in_pairs if recipe.split else _in_bf16
    rewritten: list[onnx.NodeProto] = []
    for node in model.graph.node:
        rewritten += rewrite(node) if node.name in chosen else [node]
    del model.graph.node[:]
    model.graph.node.extend(rewritten)
    if not recipe.split:
        return len(chosen)
    _cut_before(model, layers - recipe.spare_last)
    return len(chosen) + sum(1 for _, layer, _ in products if layer < layers - recipe.spare_last)


def _cut_before(model: onnx.ModelProto, layer: int) -> None:
    """Renames the hidden state entering ``layer`` (layer ``layer - 1``'s output LayerNorm's)
    :data:`BF16_UNTIL`, where the server splits the graph."""
    if layer < 1:
        raise ValueError("a split recipe needs at least one layer before the cut")
    norm = re.compile(rf"^l{layer - 1}_ffn_ln_\d+$")
    found = [n for n in model.graph.node if norm.match(n.name) and n.op_type == "LayerNormalization"]
    if len(found) != 1:
        raise ValueError(f"the graph has no single output LayerNorm of layer {layer - 1} (l{layer - 1}_ffn_ln_...)")
    hidden = found[0].output[0]
    for node in model.graph.node:
        node.input[:] = [BF16_UNTIL if name == hidden else name for name in node.input]
    found[0].output[0] = BF16_UNTIL


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


def _in_pairs(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """``node`` (a MatMul ``x @ w``) as ``high @ w' + low @ w'`` in bf16, summed in float: ``high``
    is ``x`` rounded to bf16, ``low`` the remainder rounded to bf16, ``w'`` the weight in bf16."""
    x, weight = node.input
    name = _namer(node.name)

    def op(op_type: str, inputs: list[str], out: str, **attrs: int) -> onnx.NodeProto:
        return helper.make_node(op_type, inputs, [out], name=out, **attrs)

    bf16, fp32 = TensorProto.BFLOAT16, TensorProto.FLOAT
    return [
        op("Cast", [x], name("high"), to=bf16),
        op("Cast", [name("high")], name("high_f32"), to=fp32),
        op("Sub", [x, name("high_f32")], name("low_f32")),
        op("Cast", [name("low_f32")], name("low"), to=bf16),
        op("Cast", [weight], name("weight"), to=bf16),
        helper.make_node("MatMul", [name("high"), name("weight")], [name("high_product")], name=node.name),
        op("MatMul", [name("low"), name("weight")], name("low_product")),
        op("Cast", [name("high_product")], name("high_out"), to=fp32),
        op("Cast", [name("low_product")], name("low_out"), to=fp32),
        helper.make_node("Add", [name("high_out"), name("low_out")], list(node.output), name=name("sum")),
    ]


def _namer(base: str) -> Callable[[str], str]:
    return lambda suffix: f"{base}_bf16_{suffix}"
