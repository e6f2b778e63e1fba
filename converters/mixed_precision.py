"""Mixed bf16: most of the graph in bf16, the parts where bf16 moves the rankings in fp32.

OpenVINO's bf16 inference precision puts every matrix product (and the element-wise work
between them) in bf16: fast, but on some trained encoders it fails the gate (docs/parity.md),
and OpenVINO's CPU plugin ignores the marks that should keep chosen nodes in fp32. So the choice
is written into the graph, in one of two ways (:class:`Recipe`), one variant each:

* **split** (``ov-bf16-split``, :data:`SPLIT_RECIPES`): the graph is cut before its last layers
  at a tensor named :data:`~rerank.service.model_folder.BF16_UNTIL`; the server compiles
  what computes it at precision bf16 and the rest at f32. The last layer computes only the
  first token's row (:mod:`rerank.converters.onnx_graph`), so what the fp32 part costs is
  mostly that layer's keys and values.
* **casts** (``ov-bf16-mixed``, :data:`RECIPES`): each chosen product gets ``Cast(bfloat16)``
  on both inputs and ``Cast(float)`` on its output, and the whole graph runs at precision f32,
  where OpenVINO executes exactly those products in bf16 and everything else (attention,
  softmax, LayerNorm, the head) in fp32.

Each variant has a ladder of recipes, fastest first; the converter gates each in turn and
keeps the first that passes (:func:`rerank.converters.variants.write_variants`). The layers are
our graph builders' (:mod:`rerank.converters.onnx_graph` and :mod:`rerank.converters.qwen3.graph`
name a layer's nodes ``l<i>_...``; the head's are ``head_...``), and only products with a weight
(an initializer) change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

from rerank.service.model_folder import BF16_UNTIL

_LAYER = re.compile(r"^l(\d+)_([a-z]+)_")
_KINDS = {"q": "qkv", "kv": "qkv"}
"""The last layer's query and key-value products (it computes queries for one token) count as ``qkv``."""


class NotOurLayers(ValueError):
    """The graph lacks the layers a recipe rewrites (our encoder builder's, or as many as it spares)."""


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
    """Split: everything before the spared layers in bf16 (``kinds`` is empty). Casts (False):
    the ``kinds`` products of the other layers in bf16, the rest fp32."""

    def chooses(self, layer: int, kind: str, layers: int) -> bool:
        return kind in self.kinds and layer < layers - self.spare_last


ALL_PRODUCTS = frozenset({"qkv", "o", "up", "down"})
SPLIT_RECIPES = (
    Recipe("bf16 but the last layer", frozenset(), 1, split=True),
    Recipe("bf16 but the last two layers", frozenset(), 2, split=True),
)
"""``ov-bf16-split``'s ladder: fastest first (each keeps more of the graph in fp32)."""
RECIPES = (
    Recipe("every layer", ALL_PRODUCTS, 0),
    Recipe("all but the last layer", ALL_PRODUCTS, 1),
    Recipe("feed-forward, all but the last layer", frozenset({"up", "down"}), 1),
    Recipe("feed-forward, all but the last two layers", frozenset({"up", "down"}), 2),
)
"""``ov-bf16-mixed``'s ladder: fastest first (each spares more of the graph than the one
before); timings: docs/performance.md."""


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
    (split: those before the cut)."""
    products = weight_products(model)
    if not products:
        raise NotOurLayers("the graph has no layer weight products (l<i>_... MatMuls) to put in bf16")
    layers = 1 + max(layer for _, layer, _ in products)
    chosen = {node.name for node, layer, kind in products if recipe.chooses(layer, kind, layers)}
    if recipe.split:
        _cut_before(model, layers - recipe.spare_last)
        return sum(1 for _, layer, _ in products if layer < layers - recipe.spare_last)
    rewritten: list[onnx.NodeProto] = []
    for node in model.graph.node:
        rewritten += _in_bf16(node) if node.name in chosen else [node]
    del model.graph.node[:]
    model.graph.node.extend(rewritten)
    return len(chosen)


_LAYER_OUTPUTS = (("LayerNormalization", "ffn_ln"), ("Add", "out"))
"""(op, name) of the node whose output is a layer's hidden state in our builders' graphs: a
post-norm encoder layer's output LayerNorm (``l<i>_ffn_ln_...``), a pre-norm decoder layer's
residual sum (``l<i>_out_...``, :mod:`rerank.converters.qwen3.graph`)."""


def _cut_before(model: onnx.ModelProto, layer: int) -> None:
    """Renames the hidden state entering ``layer`` (layer ``layer - 1``'s output,
    :data:`_LAYER_OUTPUTS`) :data:`BF16_UNTIL`, where the server splits the graph."""
    if layer < 1:
        raise NotOurLayers("a split recipe needs at least one layer before the cut")
    found = [
        n
        for n in model.graph.node
        for op, name in _LAYER_OUTPUTS
        if n.op_type == op and re.fullmatch(rf"l{layer - 1}_{name}_\d+", n.name)
    ]
    if len(found) != 1:
        raise NotOurLayers(
            f"the graph has no single output of layer {layer - 1} (an l{layer - 1}_ffn_ln_... LayerNorm or an "
            f"l{layer - 1}_out_... residual sum)"
        )
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


def _namer(base: str) -> Callable[[str], str]:
    return lambda suffix: f"{base}_bf16_{suffix}"
