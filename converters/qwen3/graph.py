"""The ONNX graph of a Qwen3-Reranker: only what its score needs.

Graph interface, the encoders' (what every backend feeds):

* inputs ``input_ids`` and ``attention_mask``: int64 ``[batch, sequence]``, **right** padded;
* output ``logits``: float32 ``[batch]``, ``logit(yes) - logit(no)`` at each row's last real
  token (the model card's score is its sigmoid).

The decoder (causal attention with grouped-query heads, RoPE, per-head RMSNorm of queries and
keys, SwiGLU, pre-norm RMSNorm) runs on every position of every layer but the last; the last
layer computes its query, attention output and feed-forward for the last real position alone
(row ``sum(attention_mask) - 1``), then the final RMSNorm and the LM head's two rows for ``no``
and ``yes``: never the whole vocabulary.

Right padding needs no padding mask: under the causal mask a real position only ever sees
earlier, real positions, and the padded positions after it are never read. Standard ONNX
operators only (opset 17), RMSNorm written as ONNX Runtime's SimplifiedLayerNormalization fusion
expects it. Weight products are named as :mod:`rerank.converters.mixed_precision` reads the
encoders' (``l<i>_qkv_*``, ``l<i>_o``, ``l<i>_up_*``, ``l<i>_down``), so its recipes apply unchanged.

**Shared prefix** (:func:`build_graph` with ``shared_prefix=True``): every document of a request
is read after the same tokens (the prompt's prefix, the instruction and the query), and under
the causal mask those tokens never see what follows them, so their keys and values are the same
for every document. This form runs them once per request instead of once per document:

* ``prefix_ids`` and ``prefix_mask``: int64 ``[prefixes, prefix_length]``, right padded, the
  shared heads;
* ``prefix_row``: int64 ``[batch]``, which head each row continues;
* ``input_ids`` and ``attention_mask``: each row's own tokens (document and suffix), right padded,
  at positions after its head's; ``logits`` as above.

The same products, in the same order, on the same values: it scores as the plain form does
(to float32 rounding of the softmax's sums). The backends feed it each micro-batch's common head
(:func:`rerank.service.backends.base.graph_feed`); ``python -m bench.prefix_sharing`` measures
what it saves. The converter writes this form (:mod:`rerank.converters.families.qwen3`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from rerank.converters.onnx_graph import (
    ATTENTION_MASK,
    INPUT_IDS,
    LOGITS,
    MASK_VALUE,
    OPSET,
    _Builder,
    _ints,
    _Rope,
    _rope,
    _rotate_half,
    _sequence_positions,
    rope_tables,
)
from rerank.converters.qwen3.spec import Qwen3Spec
from rerank.converters.spec import Weights
from rerank.service.model_folder import PREFIX_IDS, PREFIX_MASK, PREFIX_ROW

FAR = 1 << 40
"""A key position past every query's: how a padded head token is masked (``key > query``)."""


def rms_norm(b: _Builder, x: str, weight: str, eps: float, hint: str) -> str:
    """``weight * x / sqrt(mean(x^2) + eps)`` over the last axis (``weight``: a constant's name)."""
    mean = b.op("ReduceMean", b.op("Pow", x, b.const(np.float32(2.0))), axes=[-1], keepdims=1)
    scaled = b.op("Div", x, b.op("Sqrt", b.op("Add", mean, b.const(np.float32(eps)))))
    return b.op("Mul", scaled, weight, hint=hint)


def build_graph(
    spec: Qwen3Spec, weights: Weights, *, graph_name: str = "qwen3_reranker", shared_prefix: bool = False
) -> onnx.ModelProto:
    """The float32 ONNX model for ``spec`` with ``weights`` (canonical names) baked in;
    ``shared_prefix``: the form that reads each request's head once (module docstring)."""
    b = _Builder()
    w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
    layer = _Layer(spec, w, b)
    embed = b.const(w["emb.word"], "embed_tokens")
    inputs = [INPUT_IDS, ATTENTION_MASK]
    if shared_prefix:
        head, rows = _shared_streams(b, spec)
        x_head = b.op("Gather", embed, PREFIX_IDS, axis=0, hint="embed_prefix")
        x = b.op("Gather", embed, INPUT_IDS, axis=0, hint="embed")
        for i in range(spec.num_layers - 1):
            x_head, x = layer.full_shared(i, x_head, head, x, rows)
        h = layer.last_shared(spec.num_layers - 1, x_head, head, x, rows)
        inputs = [PREFIX_IDS, PREFIX_MASK, PREFIX_ROW, *inputs]
    else:
        stream = _plain_stream(b, spec)
        x = b.op("Gather", embed, INPUT_IDS, axis=0, hint="embed")
        for i in range(spec.num_layers - 1):
            x = layer.full(i, x, stream)
        h = layer.last_plain(spec.num_layers - 1, x, stream)
    h = rms_norm(b, h, b.const(w["norm"], "final_norm_g"), spec.rms_norm_eps, "final_norm")
    no_yes = b.linear(h, w["head.w"], None, "lm_head_no_yes")  # [B, 2]
    no, yes = b.ops("Split", [no_yes], 2, "no_yes", axis=1)
    b.nodes.append(helper.make_node("Squeeze", [b.op("Sub", yes, no), b.const(_ints([1]))], [LOGITS], name=LOGITS))
    shapes = {
        PREFIX_ROW: ["batch"],
        PREFIX_IDS: ["prefixes", "prefix_length"],
        PREFIX_MASK: ["prefixes", "prefix_length"],
    }
    graph = helper.make_graph(
        b.nodes,
        graph_name,
        [helper.make_tensor_value_info(n, TensorProto.INT64, shapes.get(n, ["batch", "sequence"])) for n in inputs],
        [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["batch"])],
        initializer=b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rerank-convert")
    model.ir_version = 8
    return model


@dataclass(frozen=True)
class _Stream:
    """What a set of rows needs at every layer: RoPE at their positions, shaped for queries
    [B,KV,G,S,D] and for keys [B,KV,S,D], and the bias their queries add to the scores."""

    rope_q: _Rope
    rope_k: _Rope
    bias: str
    positions: str
    """The rows' token positions in their prompts: [S] (every row from 0) or [B,S]."""


def _causal(b: _Builder, positions: str) -> str:
    """[S,S]: the mask value where a key comes after the query."""
    rows = b.op("Unsqueeze", positions, b.const(_ints([1])))
    cols = b.op("Unsqueeze", positions, b.const(_ints([0])))
    future = b.op("Cast", b.op("Greater", cols, rows), to=TensorProto.FLOAT)
    return b.op("Mul", future, b.const(np.float32(MASK_VALUE)), hint="causal_bias")


def _plain_stream(b: _Builder, spec: Qwen3Spec) -> _Stream:
    """Every row from position 0, one [S, D] RoPE table and the causal mask for all."""
    seq_len, positions = _sequence_positions(b)
    rope = _rope(b, spec, seq_len)  # type: ignore[arg-type]  # reads head_dim, rope_* and max_length
    assert rope is not None
    return _Stream(rope, rope, _causal(b, positions), positions)


@dataclass(frozen=True)
class _Rows:
    """The shared-prefix form's rows: their stream, and what their last layer reads."""

    stream: _Stream
    """Positions [B,S] in the whole prompt (after the head's), RoPE there, the bias below."""
    key_positions: str
    """[B,P+S]: the positions of the keys a row reads, its head's then its own; a padded head
    token's is :data:`FAR`."""
    last: str
    """[B]: each row's last real token, in the row."""
    table: _Rope
    """The whole RoPE tables, [max_length, D]."""


def _shared_streams(b: _Builder, spec: Qwen3Spec) -> tuple[_Stream, _Rows]:
    """The heads' stream (from position 0, causal) and the rows' (after their head)."""
    cos_table, sin_table = (b.const(t, n) for t, n in zip(rope_tables(spec), ("rope_cos", "rope_sin"), strict=True))
    shape = b.op("Shape", PREFIX_IDS)
    head_len = b.op("Gather", shape, b.const(_ints([1])), axis=0)
    head_positions = b.op("Range", b.const(_ints(0)), b.op("Squeeze", head_len, b.const(_ints([0]))), b.const(_ints(1)))
    zero = b.const(_ints([0]))
    head_rope = _Rope(
        b.op("Slice", cos_table, zero, head_len, zero, hint="cos_prefix"),
        b.op("Slice", sin_table, zero, head_len, zero, hint="sin_prefix"),
    )
    head = _Stream(head_rope, head_rope, _causal(b, head_positions), head_positions)

    _, positions = _sequence_positions(b)
    lengths = b.op("ReduceSum", PREFIX_MASK, b.const(_ints([1])), keepdims=0)  # [R]
    start = b.op("Unsqueeze", b.op("Gather", lengths, PREFIX_ROW, axis=0), b.const(_ints([1])))  # [B,1]
    row_positions = b.op("Add", start, b.op("Unsqueeze", positions, zero), hint="row_positions")  # [B,S]
    cos = b.op("Gather", cos_table, row_positions, axis=0)  # [B,S,D]
    sin = b.op("Gather", sin_table, row_positions, axis=0)
    axis1, axes12 = b.const(_ints([1])), b.const(_ints([1, 2]))
    rope_k = _Rope(b.op("Unsqueeze", cos, axis1), b.op("Unsqueeze", sin, axis1))  # [B,1,S,D]
    rope_q = _Rope(b.op("Unsqueeze", cos, axes12), b.op("Unsqueeze", sin, axes12))  # [B,1,1,S,D]
    real = b.op("Cast", b.op("Gather", PREFIX_MASK, PREFIX_ROW, axis=0), to=TensorProto.BOOL)  # [B,P]
    far = b.const(_ints(FAR))
    head_keys = b.op("Where", real, b.op("Unsqueeze", head_positions, zero), far)
    key_positions = b.op("Concat", head_keys, row_positions, axis=1, hint="key_positions")  # [B,P+S]
    after = b.op(
        "Greater", b.op("Unsqueeze", key_positions, axis1), b.op("Unsqueeze", row_positions, b.const(_ints([2])))
    )
    bias = b.op("Mul", b.op("Cast", after, to=TensorProto.FLOAT), b.const(np.float32(MASK_VALUE)))
    rows = _Stream(rope_q, rope_k, b.op("Unsqueeze", bias, axis1, hint="row_bias"), row_positions)  # [B,1,S,P+S]
    last = b.op("Sub", b.op("ReduceSum", ATTENTION_MASK, axis1, keepdims=0), b.const(_ints(1)), hint="last_position")
    return head, _Rows(rows, key_positions, last, _Rope(cos_table, sin_table))


class _Layer:
    """The decoder layer: over every position of a stream (:meth:`full`) or for each row's last
    position (:meth:`last_plain`); :meth:`full_shared` and :meth:`last_shared` the same over a
    shared-prefix form's heads and the rows after them."""

    def __init__(self, spec: Qwen3Spec, w: Weights, b: _Builder) -> None:
        self.spec, self.w, self.b = spec, w, b
        s = spec
        self.scale = b.const(np.float32(1.0 / math.sqrt(s.head_dim)))
        self.q_shape = b.const(_ints([0, 0, s.kv_heads, s.groups, s.head_dim]))  # [B,S,KV,G,D]
        self.kv_shape = b.const(_ints([0, 0, s.kv_heads, s.head_dim]))  # [B,S,KV,D]
        self.merge_shape = b.const(_ints([0, 0, s.heads * s.head_dim]))
        self.group_shape = b.const(_ints([1, 1, s.groups, 1, 1]))  # a KV head's keys for each of its queries
        self.grouped_shape = b.const(_ints([0, s.kv_heads, s.groups, -1, s.head_dim]))  # [B,KV,G,Q,D]
        self.heads_shape = b.const(_ints([0, s.heads, -1, s.head_dim]))  # [B,H,Q,D]
        self._consts: dict[str, str] = {}

    def _const(self, key: str, hint: str, make: Callable[[], np.ndarray] | None = None) -> str:
        """The constant for weight ``key`` (``make()`` of it, else as stored), written once
        however many streams read it."""
        if key not in self._consts:
            value = self.w[key] if make is None else make()
            self._consts[key] = self.b.const(value, hint)
        return self._consts[key]

    def _linear(self, x: str, i: int, name: str, hint: str) -> str:
        """``x @ W.T (+ bias)`` for layer ``i``'s weight ``name`` (``q``, ``k``, ...)."""
        key = f"L{i}.{name}"
        weight = self._const(key + ".w", f"{hint}_w", lambda: np.ascontiguousarray(self.w[key + ".w"].T))
        y = self.b.op("MatMul", x, weight, hint=hint)
        if key + ".b" in self.w:
            y = self.b.op("Add", y, self._const(key + ".b", f"{hint}_b"), hint=f"{hint}_bias")
        return y

    def _norm(self, x: str, name: str, i: int) -> str:
        key = f"L{i}.{name}"
        return rms_norm(self.b, x, self._const(key, f"l{i}_{name}_g"), self.spec.rms_norm_eps, f"l{i}_{name}")

    def keys_values(self, i: int, h: str, stream: _Stream) -> tuple[str, str]:
        """k and v of every position of h [B,S,H] (normalised), as [B, KV, 1, S, D] (k normalised
        and rotated)."""
        b = self.b
        k = b.op("Reshape", self._linear(h, i, "k", f"l{i}_qkv_k"), self.kv_shape)
        k = _rotate_half(b, b.op("Transpose", self._norm(k, "k_norm", i), perm=[0, 2, 1, 3]), stream.rope_k, "rope_k")
        v = b.op("Reshape", self._linear(h, i, "v", f"l{i}_qkv_v"), self.kv_shape)
        v = b.op("Transpose", v, perm=[0, 2, 1, 3])
        group = b.const(_ints([2]))
        return b.op("Unsqueeze", k, group, hint=f"l{i}_keys"), b.op("Unsqueeze", v, group, hint=f"l{i}_values")

    def _attend(self, i: int, q: str, k: str, v: str, bias: str, *, one_query: bool = False) -> str:
        """softmax(q k^T / sqrt(D) + bias) v for q [B,KV,G,Q,D], k and v [B,KV,1,S,D] and a bias
        that broadcasts to the scores: [B,KV,G,Q,D].

        Computed over four dimensions, each query head with its group's keys and values repeated
        for it: the form OpenVINO fuses into one attention kernel, which never holds a layer's
        [H,Q,S] scores whole. Over five it ran each step apart and held several of them, memory
        that grew with the square of a pair's length (docs/performance.md, "Long pairs"). With
        ``one_query`` (the last layer: Q is 1, so the scores are one row a head) it stays grouped
        over five: fused, it ran slower."""
        b = self.b
        if not one_query:
            q = b.op("Reshape", q, self.heads_shape)
            k, v = (b.op("Reshape", b.op("Expand", t, self.group_shape), self.heads_shape) for t in (k, v))
        keys = b.op("Transpose", k, perm=[0, 1, 2, 4, 3] if one_query else [0, 1, 3, 2])
        scores = b.op("MatMul", b.op("Mul", q, self.scale), keys, hint=f"l{i}_scores")
        probs = b.op("Softmax", b.op("Add", scores, bias), axis=-1, hint=f"l{i}_probs")
        context = b.op("MatMul", probs, v, hint=f"l{i}_context")
        return context if one_query else b.op("Reshape", context, self.grouped_shape)

    def _feed_forward(self, i: int, x: str, out: str = "out") -> str:
        """x + down(silu(gate h) * up h), h = RMSNorm(x); gate and up as one product. The sum is
        named ``l<i>_<out>``: a layer's output, where a split recipe may cut
        (:mod:`rerank.converters.mixed_precision`), is the rows' (``out``), never the heads'."""
        b, w, p = self.b, self.w, f"L{i}."

        def gate_up_weight() -> np.ndarray:
            return np.ascontiguousarray(np.concatenate([w[p + "gate.w"], w[p + "up.w"]], 0).T)

        h = self._norm(x, "ffn_norm", i)
        gate_up = b.op(
            "MatMul", h, self._const(p + "gate_up.w", f"l{i}_up_gate_w", gate_up_weight), hint=f"l{i}_up_gate"
        )
        gate, up = b.ops("Split", [gate_up], 2, f"l{i}_split_gate_up", axis=-1)
        hidden = b.op("Mul", b.op("Mul", gate, b.op("Sigmoid", gate), hint=f"l{i}_silu"), up)
        return b.op("Add", x, self._linear(hidden, i, "down", f"l{i}_down"), hint=f"l{i}_{out}")

    def _rest(self, i: int, x: str, h: str, k: str, v: str, stream: _Stream, out: str = "out") -> str:
        """Layer ``i`` on every position of x [B,S,H] (h its RMSNorm), its queries reading k, v."""
        b = self.b
        q = b.op("Reshape", self._linear(h, i, "q", f"l{i}_qkv_q"), self.q_shape)
        q = b.op("Transpose", self._norm(q, "q_norm", i), perm=[0, 2, 3, 1, 4])  # [B,KV,G,S,D]
        context = self._attend(i, _rotate_half(b, q, stream.rope_q, "rope_q"), k, v, stream.bias)
        context = b.op("Reshape", b.op("Transpose", context, perm=[0, 3, 1, 2, 4]), self.merge_shape)
        x = b.op("Add", x, self._linear(context, i, "o", f"l{i}_o"), hint=f"l{i}_attn_out")
        return self._feed_forward(i, x, out)

    def full(self, i: int, x: str, stream: _Stream) -> str:
        """Layer ``i`` on every position of x [B, S, H]."""
        h = self._norm(x, "attn_norm", i)
        return self._rest(i, x, h, *self.keys_values(i, h, stream), stream)

    def _with_heads(self, i: int, x_head: str, head: _Stream, x: str, rows: _Rows) -> tuple[str, ...]:
        """The heads' RMSNorm, keys and values, and the rows' RMSNorm with the keys and values
        they read: their head's (gathered per row) then their own."""
        b = self.b
        h_head = self._norm(x_head, "attn_norm", i)
        k_head, v_head = self.keys_values(i, h_head, head)
        h = self._norm(x, "attn_norm", i)
        k, v = self.keys_values(i, h, rows.stream)
        k = b.op("Concat", b.op("Gather", k_head, PREFIX_ROW, axis=0), k, axis=3, hint=f"l{i}_row_keys")
        v = b.op("Concat", b.op("Gather", v_head, PREFIX_ROW, axis=0), v, axis=3, hint=f"l{i}_row_values")
        return h_head, k_head, v_head, h, k, v

    def full_shared(self, i: int, x_head: str, head: _Stream, x: str, rows: _Rows) -> tuple[str, str]:
        """Layer ``i`` on the heads [R,P,H] and on the rows [B,S,H] after them."""
        h_head, k_head, v_head, h, k, v = self._with_heads(i, x_head, head, x, rows)
        heads = self._rest(i, x_head, h_head, k_head, v_head, head, out="head_out")
        return heads, self._rest(i, x, h, k, v, rows.stream)

    def last_shared(self, i: int, x_head: str, head: _Stream, x: str, rows: _Rows) -> str:
        """The last layer of the shared-prefix form: the heads' keys and values, then each row's
        last position: [B, H]."""
        *_, h, k, v = self._with_heads(i, x_head, head, x, rows)
        at = self.b.op("Unsqueeze", rows.last, self.b.const(_ints([1])))
        position = self.b.op("GatherND", rows.stream.positions, at, batch_dims=1, hint="last_row_position")  # [B]
        return self._last(i, x, h, k, v, rows.last, position, rows.key_positions, rows.table)

    def last_plain(self, i: int, x: str, stream: _Stream) -> str:
        """The last layer of the plain form: keys and values of every position, everything else
        for each row's last real position: [B, H]."""
        b = self.b
        lengths = b.op("ReduceSum", ATTENTION_MASK, b.const(_ints([1])), keepdims=0)
        last = b.op("Sub", lengths, b.const(_ints(1)), hint="last_position")  # [B]
        h = self._norm(x, "attn_norm", i)
        k, v = self.keys_values(i, h, stream)
        keys = b.op("Unsqueeze", stream.positions, b.const(_ints([0])))  # [1,S]
        return self._last(i, x, h, k, v, last, last, keys, stream.rope_q)

    def _last(
        self, i: int, x: str, h: str, k: str, v: str, last: str, position: str, key_positions: str, table: _Rope
    ) -> str:
        """Layer ``i`` for the token at ``last`` [B] in each row of x (h its RMSNorm), at
        ``position`` [B] in its prompt, reading the keys k, v at ``key_positions`` [B or 1, K]
        up to its own; RoPE rows from ``table``: [B, H]."""
        b, s = self.b, self.spec
        at = b.op("Unsqueeze", last, b.const(_ints([1])))  # [B,1]
        x_last = b.op("GatherND", x, at, batch_dims=1, hint="x_last")  # [B,H]
        h_last = b.op("GatherND", h, at, batch_dims=1, hint="h_last")
        q = self._linear(h_last, i, "q", f"l{i}_qkv_q")
        q = b.op("Reshape", q, b.const(_ints([-1, s.kv_heads, s.groups, 1, s.head_dim])))  # [B,KV,G,1,D]
        q = self._norm(q, "q_norm", i)
        # RoPE at each row's own last position: cos and sin rows gathered per row, [B,1,1,1,D].
        row_shape = b.const(_ints([-1, 1, 1, 1, s.head_dim]))
        cos = b.op("Reshape", b.op("Gather", table.cos, position, axis=0), row_shape)
        sin = b.op("Reshape", b.op("Gather", table.sin, position, axis=0), row_shape)
        q = _rotate_half(b, q, _Rope(cos, sin), "rope_q_last")
        # Keys after the query (padding, and a padded head's tokens) are masked: [B,1,1,1,K].
        after = b.op("Greater", key_positions, b.op("Unsqueeze", position, b.const(_ints([1]))))
        bias = b.op("Mul", b.op("Cast", after, to=TensorProto.FLOAT), b.const(np.float32(MASK_VALUE)))
        bias = b.op("Unsqueeze", bias, b.const(_ints([1, 2, 3])), hint="padding_bias_last")
        context = self._attend(i, q, k, v, bias, one_query=True)
        context = b.op("Reshape", context, b.const(_ints([-1, s.heads * s.head_dim])))
        x_last = b.op("Add", x_last, self._linear(context, i, "o", f"l{i}_o"), hint=f"l{i}_attn_out")
        return self._feed_forward(i, x_last)
