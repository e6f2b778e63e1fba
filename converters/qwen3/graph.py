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
"""

from __future__ import annotations

import math

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
)
from rerank.converters.qwen3.spec import Qwen3Spec
from rerank.converters.spec import Weights


def rms_norm(b: _Builder, x: str, weight: np.ndarray, eps: float, hint: str) -> str:
    """``weight * x / sqrt(mean(x^2) + eps)`` over the last axis."""
    mean = b.op("ReduceMean", b.op("Pow", x, b.const(np.float32(2.0))), axes=[-1], keepdims=1)
    scaled = b.op("Div", x, b.op("Sqrt", b.op("Add", mean, b.const(np.float32(eps)))))
    return b.op("Mul", scaled, b.const(weight, f"{hint}_g"), hint=hint)


def build_graph(spec: Qwen3Spec, weights: Weights, *, graph_name: str = "qwen3_reranker") -> onnx.ModelProto:
    """The float32 ONNX model for ``spec`` with ``weights`` (canonical names) baked in."""
    b = _Builder()
    w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
    seq_len, positions = _sequence_positions(b)
    rope = _rope(b, spec, seq_len)  # type: ignore[arg-type]  # reads head_dim, rope_* and max_length
    assert rope is not None
    layer = _Layer(spec, w, rope, positions)
    x = b.op("Gather", b.const(w["emb.word"], "embed_tokens"), INPUT_IDS, axis=0, hint="embed")
    for i in range(spec.num_layers - 1):
        x = layer.full(b, i, x)
    h = layer.last(b, spec.num_layers - 1, x)
    h = rms_norm(b, h, w["norm"], spec.rms_norm_eps, "final_norm")
    no_yes = b.linear(h, w["head.w"], None, "lm_head_no_yes")  # [B, 2]
    no, yes = b.ops("Split", [no_yes], 2, "no_yes", axis=1)
    b.nodes.append(helper.make_node("Squeeze", [b.op("Sub", yes, no), b.const(_ints([1]))], [LOGITS], name=LOGITS))
    graph = helper.make_graph(
        b.nodes,
        graph_name,
        [
            helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
            for n in (INPUT_IDS, ATTENTION_MASK)
        ],
        [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["batch"])],
        initializer=b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rerank-convert")
    model.ir_version = 8
    return model


class _Layer:
    """The decoder layer, over every position (:meth:`full`) or for the last one (:meth:`last`)."""

    def __init__(self, spec: Qwen3Spec, w: Weights, rope: _Rope, positions: str) -> None:
        self.spec, self.w, self.rope, self.positions = spec, w, rope, positions
        self.prepared = False

    def _prepare(self, b: _Builder) -> None:
        """Constants every layer shares, created once (at the first layer, in reading order)."""
        s = self.spec
        self.scale = b.const(np.float32(1.0 / math.sqrt(s.head_dim)))
        self.q_shape = b.const(_ints([0, 0, s.kv_heads, s.groups, s.head_dim]))  # [B,S,KV,G,D]
        self.kv_shape = b.const(_ints([0, 0, s.kv_heads, s.head_dim]))  # [B,S,KV,D]
        self.merge_shape = b.const(_ints([0, 0, s.heads * s.head_dim]))
        rows = b.op("Unsqueeze", self.positions, b.const(_ints([1])))
        cols = b.op("Unsqueeze", self.positions, b.const(_ints([0])))
        future = b.op("Cast", b.op("Greater", cols, rows), to=TensorProto.FLOAT)
        self.causal = b.op("Mul", future, b.const(np.float32(MASK_VALUE)), hint="causal_bias")  # [S,S]
        self.prepared = True

    def _norm(self, b: _Builder, x: str, name: str, i: int) -> str:
        return rms_norm(b, x, self.w[f"L{i}.{name}"], self.spec.rms_norm_eps, f"l{i}_{name}")

    def _keys_values(self, b: _Builder, i: int, h: str) -> tuple[str, str]:
        """k and v of every position, as [B, KV, 1, S, D] (k normalised and rotated)."""
        w, p = self.w, f"L{i}."
        k = b.op("Reshape", b.linear(h, w[p + "k.w"], w.get(p + "k.b"), f"l{i}_qkv_k"), self.kv_shape)
        k = _rotate_half(b, b.op("Transpose", self._norm(b, k, "k_norm", i), perm=[0, 2, 1, 3]), self.rope, "rope_k")
        v = b.op("Reshape", b.linear(h, w[p + "v.w"], w.get(p + "v.b"), f"l{i}_qkv_v"), self.kv_shape)
        v = b.op("Transpose", v, perm=[0, 2, 1, 3])
        group = b.const(_ints([2]))
        return b.op("Unsqueeze", k, group, hint=f"l{i}_keys"), b.op("Unsqueeze", v, group, hint=f"l{i}_values")

    def _attend(self, b: _Builder, i: int, q: str, k: str, v: str, bias: str) -> str:
        """softmax(q k^T / sqrt(D) + bias) v for q [B,KV,G,Q,D], k and v [B,KV,1,S,D]: [B,KV,G,Q,D]."""
        scores = b.op(
            "MatMul", b.op("Mul", q, self.scale), b.op("Transpose", k, perm=[0, 1, 2, 4, 3]), hint=f"l{i}_scores"
        )
        probs = b.op("Softmax", b.op("Add", scores, bias), axis=-1, hint=f"l{i}_probs")
        return b.op("MatMul", probs, v, hint=f"l{i}_context")

    def _feed_forward(self, b: _Builder, i: int, x: str) -> str:
        """x + down(silu(gate h) * up h), h = RMSNorm(x); gate and up as one product."""
        w, p = self.w, f"L{i}."
        h = self._norm(b, x, "ffn_norm", i)
        gate_up = b.linear(h, np.concatenate([w[p + "gate.w"], w[p + "up.w"]], 0), None, f"l{i}_up_gate")
        gate, up = b.ops("Split", [gate_up], 2, f"l{i}_split_gate_up", axis=-1)
        hidden = b.op("Mul", b.op("Mul", gate, b.op("Sigmoid", gate), hint=f"l{i}_silu"), up)
        return b.op("Add", x, b.linear(hidden, w[p + "down.w"], None, f"l{i}_down"), hint=f"l{i}_out")

    def full(self, b: _Builder, i: int, x: str) -> str:
        """Layer ``i`` on every position of x [B, S, H]."""
        if not self.prepared:
            self._prepare(b)
        w, p = self.w, f"L{i}."
        h = self._norm(b, x, "attn_norm", i)
        k, v = self._keys_values(b, i, h)
        q = b.op("Reshape", b.linear(h, w[p + "q.w"], w.get(p + "q.b"), f"l{i}_qkv_q"), self.q_shape)
        q = b.op("Transpose", self._norm(b, q, "q_norm", i), perm=[0, 2, 3, 1, 4])  # [B,KV,G,S,D]
        context = self._attend(b, i, _rotate_half(b, q, self.rope, "rope_q"), k, v, self.causal)
        context = b.op("Reshape", b.op("Transpose", context, perm=[0, 3, 1, 2, 4]), self.merge_shape)
        x = b.op("Add", x, b.linear(context, w[p + "o.w"], None, f"l{i}_o"), hint=f"l{i}_attn_out")
        return self._feed_forward(b, i, x)

    def last(self, b: _Builder, i: int, x: str) -> str:
        """Layer ``i`` for each row's last real position only (keys and values still of every
        position): [B, H]."""
        if not self.prepared:
            self._prepare(b)
        w, s, p = self.w, self.spec, f"L{i}."
        lengths = b.op("ReduceSum", ATTENTION_MASK, b.const(_ints([1])), keepdims=0)
        last = b.op("Sub", lengths, b.const(_ints(1)), hint="last_position")  # [B]
        h = self._norm(b, x, "attn_norm", i)
        k, v = self._keys_values(b, i, h)
        at_last = b.op("Unsqueeze", last, b.const(_ints([1])))  # [B,1]
        x_last = b.op("GatherND", x, at_last, batch_dims=1, hint="x_last")  # [B,H]
        h_last = b.op("GatherND", h, at_last, batch_dims=1, hint="h_last")
        q = b.linear(h_last, w[p + "q.w"], w.get(p + "q.b"), f"l{i}_qkv_q")
        q = b.op("Reshape", q, b.const(_ints([-1, s.kv_heads, s.groups, 1, s.head_dim])))  # [B,KV,G,1,D]
        q = self._norm(b, q, "q_norm", i)
        # RoPE at each row's own last position: cos and sin rows gathered per row, [B,1,1,1,D].
        row_shape = b.const(_ints([-1, 1, 1, 1, s.head_dim]))
        cos = b.op("Reshape", b.op("Gather", self.rope.cos, last, axis=0), row_shape)
        sin = b.op("Reshape", b.op("Gather", self.rope.sin, last, axis=0), row_shape)
        q = _rotate_half(b, q, _Rope(cos, sin), "rope_q_last")
        # Keys after the last real one (padding) are masked: [B,1,1,1,S].
        after = b.op("Greater", b.op("Unsqueeze", self.positions, b.const(_ints([0]))), at_last)  # [B,S]
        bias = b.op("Mul", b.op("Cast", after, to=TensorProto.FLOAT), b.const(np.float32(MASK_VALUE)))
        bias = b.op("Unsqueeze", bias, b.const(_ints([1, 2, 3])), hint="padding_bias_last")
        context = self._attend(b, i, q, k, v, bias)
        context = b.op("Reshape", context, b.const(_ints([-1, s.heads * s.head_dim])))
        x_last = b.op("Add", x_last, b.linear(context, w[p + "o.w"], None, f"l{i}_o"), hint=f"l{i}_attn_out")
        return self._feed_forward(b, i, x_last)
