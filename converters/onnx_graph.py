"""Builds the ONNX graph of a cross-encoder from an :class:`~rerank.converters.spec.EncoderSpec`.

One definition covers every supported family (XLM-R, BERT, JinaBERT, GTE); the spec switches
the three places where they differ: positions (learned table, ALiBi bias, RoPE rotation), the
feed-forward (GELU, GEGLU, GTE's gated GELU) and the classifier head.

Graph interface (what :mod:`rerank.service.backends.onnx` feeds):

* inputs ``input_ids`` and ``attention_mask``: int64 ``[batch, sequence]``, right padded;
  ``token_type_ids`` as well when ``spec.type_ids_input``;
* output ``logits``: float32 ``[batch]``, the raw relevance logit of each pair.

Only standard ONNX operators are used (opset 17), written in the shapes that ONNX Runtime's
graph optimiser recognises (erf GELU, LayerNormalization), so the plain graph is portable and
still fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rerank.converters.spec import EncoderSpec, Weights, alibi_slopes

OPSET = 17
MASK_VALUE = float(np.finfo(np.float32).min)
"""Additive bias for padded keys, as transformers uses: exp() of it underflows to exactly 0."""
INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS, LOGITS = "input_ids", "attention_mask", "token_type_ids", "logits"
"""The graph's interface (see the module docstring)."""


class _Builder:
    """Accumulates nodes and initializers, naming intermediate values uniquely."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: np.ndarray | float | int | list, hint: str = "c") -> str:
        array = np.asarray(value)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, hint: str | None = None, **attrs) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def ops(self, op_type: str, inputs: list[str], n_out: int, hint: str, **attrs) -> list[str]:
        outs = [self.name(f"{hint}{i}") for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=outs[0], **attrs))
        return outs

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None, hint: str) -> str:
        """``x @ weight.T + bias`` with ``weight`` in PyTorch's [out, in] orientation."""
        y = self.op("MatMul", x, self.const(np.ascontiguousarray(weight.T), f"{hint}_w"), hint=hint)
        if bias is not None:
            y = self.op("Add", y, self.const(bias, f"{hint}_b"), hint=f"{hint}_bias")
        return y

    def layer_norm(self, x: str, w: np.ndarray, b: np.ndarray, eps: float, hint: str) -> str:
        return self.op(
            "LayerNormalization",
            x,
            self.const(w, f"{hint}_g"),
            self.const(b, f"{hint}_b"),
            axis=-1,
            epsilon=float(eps),
            hint=hint,
        )

    def gelu(self, x: str) -> str:
        # Exact (erf) GELU, written as ONNX Runtime's GELU fusion expects it.
        scaled = self.op("Div", x, self.const(np.float32(math.sqrt(2.0))))
        erf = self.op("Erf", scaled)
        one_plus = self.op("Add", erf, self.const(np.float32(1.0)))
        return self.op("Mul", self.op("Mul", x, one_plus), self.const(np.float32(0.5)), hint="gelu")


def build_graph(
    spec: EncoderSpec, weights: Weights, *, graph_name: str = "cross_encoder", fused_attention: bool = False
) -> onnx.ModelProto:
    """Returns the float32 ONNX model for ``spec`` with ``weights`` baked in as initializers.

    ``fused_attention``: each layer's attention is ONNX Runtime's ``com.microsoft``
    MultiHeadAttention kernel instead of standard operators (the "fused" variants). It never
    materialises the padded [batch, heads, seq, seq] score tensor chain op by op, reads the
    padding mask directly, and on the CPU runs a micro-batch without padding in tiles.

    The graph is assembled in reading order: positions, embeddings, what every layer's attention
    shares (bias, RoPE tables), the post-LayerNorm encoder layers, the head. (Value names are
    numbered in creation order, so that order is also what keeps a rebuilt graph byte-identical.)
    """
    b = _Builder()
    w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
    seq_len, positions = _sequence_positions(b)
    x = _embeddings(b, spec, w, positions)
    attention: _Attention = (
        _FusedAttention.build(b, spec, positions, seq_len)
        if fused_attention
        else _StandardAttention.build(b, spec, positions, seq_len)
    )
    for i in range(spec.num_layers):
        if i < spec.num_layers - 1:
            x = _residual_norm(b, spec, w, i, "attn_ln", attention(b, w, i, x), x)
        else:
            # Only the first token's output reaches the head: the last layer computes keys and
            # values for every token and everything else for the first token alone.
            first = _first_row(b, x, 1, f"l{i}_first")
            x = _residual_norm(b, spec, w, i, "attn_ln", attention(b, w, i, x, first), first)
        x = _feed_forward(b, spec, w, i, x)
    b.nodes.append(helper.make_node("Squeeze", [_head(b, spec, w, x), b.const(_ints([1]))], [LOGITS], name=LOGITS))

    graph = helper.make_graph(
        b.nodes,
        graph_name,
        _graph_inputs(spec),
        [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["batch"])],
        initializer=b.initializers,
    )
    opsets = [helper.make_opsetid("", OPSET)]
    if fused_attention:
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="rerank-convert")
    model.ir_version = 8
    return model


def _ints(values: int | list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _graph_inputs(spec: EncoderSpec) -> list[onnx.ValueInfoProto]:
    names = [INPUT_IDS, ATTENTION_MASK] + ([TOKEN_TYPE_IDS] if spec.type_ids_input else [])
    return [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"]) for name in names]


def _sequence_positions(b: _Builder) -> tuple[str, str]:
    """(sequence length as a [1] tensor, positions 0..S-1 as [S]), from ``input_ids``' shape."""
    shape = b.op("Shape", INPUT_IDS)
    seq_len = b.op("Gather", shape, b.const(_ints([1])), axis=0, hint="seq_len")
    seq_scalar = b.op("Squeeze", seq_len, b.const(_ints([0])))
    positions = b.op("Range", b.const(_ints(0)), seq_scalar, b.const(_ints(1)), hint="positions")
    return seq_len, positions


def _embeddings(b: _Builder, spec: EncoderSpec, w: Weights, positions: str) -> str:
    """Word (+ learned position) (+ token type) embeddings, then their LayerNorm: [B, S, H]."""
    x = b.op("Gather", b.const(w["emb.word"], "word_embeddings"), INPUT_IDS, axis=0, hint="word")
    if spec.positions == "learned":
        if spec.positions_from_pad:
            # XLM-R: real tokens count up from pad_id + 1, pad tokens sit at pad_id.
            not_pad = b.op(
                "Cast", b.op("Not", b.op("Equal", INPUT_IDS, b.const(_ints(spec.pad_id)))), to=TensorProto.INT64
            )
            counted = b.op("Mul", b.op("CumSum", not_pad, b.const(_ints(1))), not_pad)
            pos_ids = b.op("Add", counted, b.const(_ints(spec.pad_id)), hint="position_ids")
        else:
            pos_ids = b.op("Add", positions, b.const(_ints(spec.position_offset)))
        pos = b.op("Gather", b.const(w["emb.pos"], "position_embeddings"), pos_ids, axis=0, hint="pos")
        x = b.op("Add", x, pos)
    if "emb.type" in w:
        if spec.type_ids_input:
            x = b.op("Add", x, b.op("Gather", b.const(w["emb.type"], "type_embeddings"), TOKEN_TYPE_IDS, axis=0))
        else:
            # Every token has type 0: add that row as a constant.
            x = b.op("Add", x, b.const(w["emb.type"][0], "type0_embedding"))
    return b.layer_norm(x, w["emb.ln.w"], w["emb.ln.b"], spec.layer_norm_eps, "emb_ln")


def _padding_bias(b: _Builder) -> str:
    """0 for real keys, :data:`MASK_VALUE` for padded ones: [B, 1, 1, S]."""
    mask_f = b.op("Cast", ATTENTION_MASK, to=TensorProto.FLOAT)
    inv = b.op("Sub", b.const(np.float32(1.0)), mask_f)
    bias = b.op("Mul", inv, b.const(np.float32(MASK_VALUE)))
    return b.op("Unsqueeze", bias, b.const(_ints([1, 2])), hint="mask_bias")


def _alibi_bias(b: _Builder, spec: EncoderSpec, positions: str) -> str:
    """JinaBERT's symmetric ALiBi, -slope_h * |i - j|: [1, N, S, S]."""
    pos_f = b.op("Cast", positions, to=TensorProto.FLOAT)
    rows = b.op("Unsqueeze", pos_f, b.const(_ints([1])))
    cols = b.op("Unsqueeze", pos_f, b.const(_ints([0])))
    distance = b.op("Abs", b.op("Sub", rows, cols))  # [S,S]
    slopes = -alibi_slopes(spec.heads).reshape(1, spec.heads, 1, 1)
    return b.op("Mul", b.const(slopes, "alibi_slopes"), distance, hint="alibi")


@dataclass(frozen=True)
class _Rope:
    """cos and sin rows of :func:`rope_tables` for the current sequence: [S, D] (or [S, 1, D])."""

    cos: str
    sin: str


def _rope(b: _Builder, spec: EncoderSpec, seq_len: str) -> _Rope | None:
    """The RoPE tables cut to the sequence length, or None when the model has no RoPE."""
    if spec.positions != "rope":
        return None
    cos_table, sin_table = rope_tables(spec)
    start, axis0 = b.const(_ints([0])), b.const(_ints([0]))
    cos = b.op("Slice", b.const(cos_table, "rope_cos"), start, seq_len, axis0, hint="cos")
    sin = b.op("Slice", b.const(sin_table, "rope_sin"), start, seq_len, axis0, hint="sin")
    return _Rope(cos, sin)


def _rotate_half(b: _Builder, t: str, rope: _Rope, hint: str | None = None) -> str:
    """NeoX-style RoPE on the last axis: t * cos + [-t2, t1] * sin."""
    first, second = b.ops("Split", [t], 2, "half", axis=-1)
    rotated = b.op("Concat", b.op("Neg", second), first, axis=-1)
    return b.op("Add", b.op("Mul", t, rope.cos), b.op("Mul", rotated, rope.sin), hint=hint)


def _first_row(b: _Builder, t: str, axis: int, hint: str | None = None) -> str:
    """``t`` cut to its first row on ``axis`` (the axis kept, of size 1)."""
    return b.op("Slice", t, b.const(_ints([0])), b.const(_ints([1])), b.const(_ints([axis])), hint=hint)


class _Attention(Protocol):
    def __call__(self, b: _Builder, w: Weights, i: int, x: str, queries: str | None = None) -> str:
        """Layer ``i``'s self-attention on ``x`` [B, S, H], output projection included: for every
        token, or for ``queries`` alone ([B, 1, H], the first token of ``x``), whose keys and
        values are still every token's."""
        ...


@dataclass(frozen=True)
class _StandardAttention:
    """Attention in standard operators, heads as [B, N, S, D]; padding (and ALiBi) as one
    additive bias on the scores."""

    spec: EncoderSpec
    bias: str
    """[B, 1, 1, S] padding bias, plus ALiBi's [1, N, S, S] where used."""
    rope: _Rope | None
    merge_shape: str
    qkv_shape: str
    scale: str

    @classmethod
    def build(cls, b: _Builder, spec: EncoderSpec, positions: str, seq_len: str) -> _StandardAttention:
        """The values every layer shares."""
        bias = _padding_bias(b)
        if spec.positions == "alibi":
            bias = b.op("Add", bias, _alibi_bias(b, spec, positions), hint="attention_bias")
        rope = _rope(b, spec, seq_len)
        merge_shape = b.const(_ints([0, 0, spec.hidden]))
        qkv_shape = b.const(_ints([0, 0, 3, spec.heads, spec.head_dim]))
        scale = b.const(np.float32(1.0 / math.sqrt(spec.head_dim)))
        return cls(spec, bias, rope, merge_shape, qkv_shape, scale)

    def __call__(self, b: _Builder, w: Weights, i: int, x: str, queries: str | None = None) -> str:
        p = f"L{i}."
        rope, bias = self.rope, self.bias
        if queries is None:
            qkv = b.linear(x, w[p + "qkv.w"], w[p + "qkv.b"], f"l{i}_qkv")
            qkv = b.op("Transpose", b.op("Reshape", qkv, self.qkv_shape), perm=[2, 0, 3, 1, 4])  # [3,B,N,S,D]
            q, k, v = (
                b.op("Squeeze", part, b.const(_ints([0]))) for part in b.ops("Split", [qkv], 3, f"l{i}_split", axis=0)
            )
        else:
            h, heads, dim = self.spec.hidden, self.spec.heads, self.spec.head_dim
            q = b.linear(queries, w[p + "qkv.w"][:h], w[p + "qkv.b"][:h], f"l{i}_q")
            q = b.op("Transpose", b.op("Reshape", q, b.const(_ints([0, 0, heads, dim]))), perm=[0, 2, 1, 3])
            kv = b.linear(x, w[p + "qkv.w"][h:], w[p + "qkv.b"][h:], f"l{i}_kv")
            kv = b.op("Transpose", b.op("Reshape", kv, b.const(_ints([0, 0, 2, heads, dim]))), perm=[2, 0, 3, 1, 4])
            k, v = (
                b.op("Squeeze", part, b.const(_ints([0]))) for part in b.ops("Split", [kv], 2, f"l{i}_split", axis=0)
            )
            rope = _Rope(_first_row(b, rope.cos, 0), _first_row(b, rope.sin, 0)) if rope is not None else None
            bias = _first_row(b, bias, 2) if self.spec.positions == "alibi" else bias
        if self.rope is not None:
            assert rope is not None
            q, k = _rotate_half(b, q, rope, "rope"), _rotate_half(b, k, self.rope, "rope")
        scores = b.op(
            "MatMul", b.op("Mul", q, self.scale), b.op("Transpose", k, perm=[0, 1, 3, 2]), hint=f"l{i}_scores"
        )
        probs = b.op("Softmax", b.op("Add", scores, bias), axis=-1, hint=f"l{i}_probs")
        context = b.op("Transpose", b.op("MatMul", probs, v), perm=[0, 2, 1, 3])
        context = b.op("Reshape", context, self.merge_shape, hint=f"l{i}_context")
        return b.linear(context, w[p + "o.w"], w[p + "o.b"], f"l{i}_o")


@dataclass(frozen=True)
class _FusedAttention:
    """ONNX Runtime's ``com.microsoft`` MultiHeadAttention on [B, S, H] tensors: padding as key
    lengths, ALiBi as its attention_bias input, RoPE applied to q and k before it."""

    spec: EncoderSpec
    key_lengths: str
    alibi: str
    """[1, N, S, S], or "" (no bias input) without ALiBi."""
    rope: _Rope | None
    """cos and sin as [S, 1, D], broadcast over the heads of a [B, S, N, D] view."""
    merge_shape: str
    split_shape: str
    unpadded: str
    """A bool scalar, no row is padded; "" with ALiBi (its bias is an input the CPU's
    memory-efficient kernel does not take)."""

    @classmethod
    def build(cls, b: _Builder, spec: EncoderSpec, positions: str, seq_len: str) -> _FusedAttention:
        """The values every layer shares."""
        alibi = _alibi_bias(b, spec, positions) if spec.positions == "alibi" else ""
        rope = _rope(b, spec, seq_len)
        merge_shape = b.const(_ints([0, 0, spec.hidden]))
        # The padding mask as key lengths [B] (the service pads on the right). A [B,S] mask
        # keeps ONNX Runtime's CUDA kernel off its fused attention paths (docs/performance.md,
        # "GPU"); the CPU gives identical scores either way.
        lengths = b.op("ReduceSum", ATTENTION_MASK, b.const(_ints([1])), keepdims=0)
        key_lengths = b.op("Cast", lengths, to=TensorProto.INT32, hint="key_lengths")
        split_shape = b.const(_ints([0, 0, spec.heads, spec.head_dim]))
        if rope is not None:
            rope = _Rope(
                b.op("Unsqueeze", rope.cos, b.const(_ints([1]))), b.op("Unsqueeze", rope.sin, b.const(_ints([1])))
            )
        unpadded = ""
        if not alibi:
            shortest = b.op("ReduceMin", ATTENTION_MASK, keepdims=0)
            unpadded = b.op("Equal", shortest, b.const(np.int64(1)), hint="unpadded")
        return cls(spec, key_lengths, alibi, rope, merge_shape, split_shape, unpadded)

    def _rotate(self, b: _Builder, t: str, rope: _Rope) -> str:
        """RoPE on a [B,S,H] tensor viewed as [B,S,N,D]."""
        rotated = _rotate_half(b, b.op("Reshape", t, self.split_shape), rope)
        return b.op("Reshape", rotated, self.merge_shape, hint="rope")

    def __call__(self, b: _Builder, w: Weights, i: int, x: str, queries: str | None = None) -> str:
        p = f"L{i}."
        rope, alibi = self.rope, self.alibi
        if queries is None:
            qkv = b.linear(x, w[p + "qkv.w"], w[p + "qkv.b"], f"l{i}_qkv")
            q, k, v = b.ops("Split", [qkv], 3, f"l{i}_qkv_split", axis=-1)
        else:
            h = self.spec.hidden
            q = b.linear(queries, w[p + "qkv.w"][:h], w[p + "qkv.b"][:h], f"l{i}_q")
            kv = b.linear(x, w[p + "qkv.w"][h:], w[p + "qkv.b"][h:], f"l{i}_kv")
            k, v = b.ops("Split", [kv], 2, f"l{i}_kv_split", axis=-1)
            rope = _Rope(_first_row(b, rope.cos, 0), _first_row(b, rope.sin, 0)) if rope is not None else None
            alibi = _first_row(b, alibi, 2) if alibi else alibi
        if self.rope is not None:
            assert rope is not None
            q, k = self._rotate(b, q, rope), self._rotate(b, k, self.rope)
        out = b.name(f"l{i}_mha")
        if not self.unpadded:
            b.nodes.append(self._mha([q, k, v, "", self.key_lengths, alibi], out))
        else:
            # ONNX Runtime's CPU kernel runs attention in tiles (memory linear in the length, not
            # its square: 0.8 against 9 GB for one 8,192-token pair at bge-m3's shape) only
            # without a padding mask; a micro-batch whose rows are all full needs none.
            branches = {}
            for branch, inputs in (("then", [q, k, v]), ("else", [q, k, v, "", self.key_lengths])):
                result = b.name(f"l{i}_mha_{branch}")
                branches[f"{branch}_branch"] = helper.make_graph(
                    [self._mha(inputs, result)],
                    b.name(f"l{i}_{branch}"),
                    [],
                    [helper.make_tensor_value_info(result, TensorProto.FLOAT, None)],
                )
            b.nodes.append(helper.make_node("If", [self.unpadded], [out], name=b.name(f"l{i}_if"), **branches))
        return b.linear(out, w[p + "o.w"], w[p + "o.b"], f"l{i}_o")

    def _mha(self, inputs: list[str], output: str) -> onnx.NodeProto:
        return helper.make_node(
            "MultiHeadAttention",
            inputs,
            [output],
            name=f"{output}_node",
            domain="com.microsoft",
            num_heads=self.spec.heads,
            scale=1.0 / math.sqrt(self.spec.head_dim),
        )


def _residual_norm(b: _Builder, spec: EncoderSpec, w: Weights, i: int, norm: str, y: str, x: str) -> str:
    """Post-LayerNorm residual: LayerNorm(y + x) with layer ``i``'s ``norm`` weights."""
    p = f"L{i}."
    return b.layer_norm(b.op("Add", y, x), w[f"{p}{norm}.w"], w[f"{p}{norm}.b"], spec.layer_norm_eps, f"l{i}_{norm}")


def _feed_forward(b: _Builder, spec: EncoderSpec, w: Weights, i: int, x: str) -> str:
    """The feed-forward block and its residual LayerNorm."""
    p = f"L{i}."
    up = b.linear(x, w[p + "up.w"], w.get(p + "up.b"), f"l{i}_up")
    if spec.feed_forward == "gelu":
        hidden = b.gelu(up)
    else:
        first, second = b.ops("Split", [up], 2, f"l{i}_glu", axis=-1)
        if spec.feed_forward == "geglu":
            hidden = b.op("Mul", b.gelu(first), second)
        else:  # gelu-gated-second (GTE): [up | gate] -> up * gelu(gate)
            hidden = b.op("Mul", first, b.gelu(second))
    down = b.linear(hidden, w[p + "down.w"], w[p + "down.b"], f"l{i}_down")
    return _residual_norm(b, spec, w, i, "ffn_ln", down, x)


def _head(b: _Builder, spec: EncoderSpec, w: Weights, x: str) -> str:
    """The classifier on the first token: [B, 1]."""
    first_token = b.op("Gather", x, b.const(_ints(0)), axis=1, hint="cls")
    if spec.head == "tanh":
        return b.op("Tanh", b.linear(first_token, w["head.out.w"], w["head.out.b"], "head_out"))
    if spec.head == "linear":
        return b.linear(first_token, w["head.out.w"], w["head.out.b"], "head_out")
    pooled = b.op("Tanh", b.linear(first_token, w["head.dense.w"], w["head.dense.b"], "head_dense"))
    return b.linear(pooled, w["head.out.w"], w["head.out.b"], "head_out")


def rope_tables(spec: EncoderSpec) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin tables ``[max_length, head_dim]`` for NeoX-style (rotate-half) RoPE.

    Computed in float32 in transformers' order (inverse frequencies, divided by the linear
    position scale, times the integer position) because at positions in the thousands a
    different rounding order alone moves angles by ~1e-4.
    """
    import torch  # build time only; its float32 pow matches the reference's bit for bit

    D = spec.head_dim
    inv_freq = 1.0 / (spec.rope_base ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    inv_freq = inv_freq / spec.rope_position_scale
    positions = torch.arange(spec.max_length, dtype=torch.int64).float()
    freqs = inv_freq[:, None] @ positions[None, :]
    emb = torch.cat((freqs.T, freqs.T), dim=-1)
    return emb.cos().numpy().astype(np.float32), emb.sin().numpy().astype(np.float32)


EXTERNAL_WEIGHTS_BYTES = 64 << 20
"""Weights over this go to ``<graph>.data`` beside the graph. OpenVINO maps that file rather than
copying it: its CPU plugin keeps the weights it read besides its own repacked copy, so weights
inside the graph cost their size twice in anonymous memory, in a file once (and the mapped copy
is page cache, shared between processes and reclaimable). Protobuf also caps a graph at 2 GiB."""


def save(model: onnx.ModelProto, path) -> None:
    """Saves ``model``; weights go to ``<name>.data`` beside it when over :data:`EXTERNAL_WEIGHTS_BYTES`."""
    size = sum(t.ByteSize() for t in model.graph.initializer)
    data = path.parent / f"{path.name}.data"
    data.unlink(missing_ok=True)  # a graph saved whole must not leave an older one's weights beside it
    if size > EXTERNAL_WEIGHTS_BYTES:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data.name,
            size_threshold=1024,
        )
        data.chmod(0o644)  # onnx writes it private; model folders are shared
    else:
        onnx.save_model(model, str(path))


def remove(path) -> None:
    """Deletes a graph :func:`save` wrote, with its external weights if it has them."""
    path.unlink(missing_ok=True)
    (path.parent / f"{path.name}.data").unlink(missing_ok=True)
