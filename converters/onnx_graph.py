"""Builds the ONNX graph of a cross-encoder from an :class:`~converters.spec.EncoderSpec`.

One definition covers every supported family (XLM-R, BERT, JinaBERT, GTE); the spec switches
the three places where they differ: positions (learned table, ALiBi bias, RoPE rotation), the
feed-forward (GELU, GEGLU, GTE's gated GELU) and the classifier head.

Graph interface (what :mod:`service.backends.onnx` feeds):

* inputs ``input_ids`` and ``attention_mask``: int64 ``[batch, sequence]``, right padded;
  ``token_type_ids`` as well when ``spec.type_ids_input``;
* output ``logits``: float32 ``[batch]``, the raw relevance logit of each pair.

Only standard ONNX operators are used (opset 17), written in the shapes that ONNX Runtime's
graph optimiser recognises (erf GELU, LayerNormalization), so the plain graph is portable and
still fast.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from converters.spec import EncoderSpec, Weights, alibi_slopes

OPSET = 17
MASK_VALUE = float(np.finfo(np.float32).min)
"""Additive bias for padded keys, as transformers uses: exp() of it underflows to exactly 0."""


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
    materialises the padded [batch, heads, seq, seq] score tensor chain op by op, and reads the
    padding mask directly.
    """
    b = _Builder()
    H, N, D = spec.hidden, spec.heads, spec.head_dim
    w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}

    input_ids, attention_mask = "input_ids", "attention_mask"
    graph_inputs = [
        helper.make_tensor_value_info(input_ids, TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info(attention_mask, TensorProto.INT64, ["batch", "sequence"]),
    ]
    if spec.type_ids_input:
        graph_inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", "sequence"]))

    shape = b.op("Shape", input_ids)
    seq_len = b.op("Gather", shape, b.const(np.array([1], dtype=np.int64)), axis=0, hint="seq_len")
    seq_scalar = b.op("Squeeze", seq_len, b.const(np.array([0], dtype=np.int64)))
    positions = b.op(
        "Range",
        b.const(np.array(0, dtype=np.int64)),
        seq_scalar,
        b.const(np.array(1, dtype=np.int64)),
        hint="positions",
    )

    # --- embeddings -------------------------------------------------------------------------
    x = b.op("Gather", b.const(w["emb.word"], "word_embeddings"), input_ids, axis=0, hint="word")
    if spec.positions == "learned":
        if spec.positions_from_pad:
            # XLM-R: real tokens count up from pad_id + 1, pad tokens sit at pad_id.
            not_pad = b.op(
                "Cast",
                b.op("Not", b.op("Equal", input_ids, b.const(np.array(spec.pad_id, dtype=np.int64)))),
                to=TensorProto.INT64,
            )
            counted = b.op("Mul", b.op("CumSum", not_pad, b.const(np.array(1, dtype=np.int64))), not_pad)
            pos_ids = b.op("Add", counted, b.const(np.array(spec.pad_id, dtype=np.int64)), hint="position_ids")
        else:
            pos_ids = b.op("Add", positions, b.const(np.array(spec.position_offset, dtype=np.int64)))
        pos = b.op("Gather", b.const(w["emb.pos"], "position_embeddings"), pos_ids, axis=0, hint="pos")
        x = b.op("Add", x, pos)
    if "emb.type" in w:
        if spec.type_ids_input:
            types = b.op("Gather", b.const(w["emb.type"], "type_embeddings"), "token_type_ids", axis=0)
            x = b.op("Add", x, types)
        else:
            # Every token has type 0: add that row as a constant.
            x = b.op("Add", x, b.const(w["emb.type"][0], "type0_embedding"))
    x = b.layer_norm(x, w["emb.ln.w"], w["emb.ln.b"], spec.layer_norm_eps, "emb_ln")

    # --- attention bias: padding mask, plus ALiBi where used --------------------------------
    # (The fused kernel takes the padding mask as is and ALiBi as its attention_bias input.)
    bias = alibi = ""
    if not fused_attention:
        mask_f = b.op("Cast", attention_mask, to=TensorProto.FLOAT)
        inv = b.op("Sub", b.const(np.float32(1.0)), mask_f)
        bias = b.op("Mul", inv, b.const(np.float32(MASK_VALUE)))
        bias = b.op("Unsqueeze", bias, b.const(np.array([1, 2], dtype=np.int64)), hint="mask_bias")  # [B,1,1,S]
    if spec.positions == "alibi":
        pos_f = b.op("Cast", positions, to=TensorProto.FLOAT)
        rows = b.op("Unsqueeze", pos_f, b.const(np.array([1], dtype=np.int64)))
        cols = b.op("Unsqueeze", pos_f, b.const(np.array([0], dtype=np.int64)))
        distance = b.op("Abs", b.op("Sub", rows, cols))  # [S,S]
        slopes = -alibi_slopes(N).reshape(1, N, 1, 1)
        alibi = b.op("Mul", b.const(slopes, "alibi_slopes"), distance, hint="alibi")  # [1,N,S,S]
        if not fused_attention:
            bias = b.op("Add", bias, alibi, hint="attention_bias")

    cos = sin = None
    if spec.positions == "rope":
        cos_table, sin_table = rope_tables(spec)
        start = b.const(np.array([0], dtype=np.int64))
        axis0 = b.const(np.array([0], dtype=np.int64))
        cos = b.op("Slice", b.const(cos_table, "rope_cos"), start, seq_len, axis0, hint="cos")
        sin = b.op("Slice", b.const(sin_table, "rope_sin"), start, seq_len, axis0, hint="sin")

    merge_shape = b.const(np.array([0, 0, H], dtype=np.int64))
    if not fused_attention:
        qkv_shape = b.const(np.array([0, 0, 3, N, D], dtype=np.int64))
        scale = b.const(np.float32(1.0 / math.sqrt(D)))

    def rotate(t: str) -> str:
        first, second = b.ops("Split", [t], 2, "half", axis=-1)
        rotated = b.op("Concat", b.op("Neg", second), first, axis=-1)
        return b.op("Add", b.op("Mul", t, cos), b.op("Mul", rotated, sin), hint="rope")

    if fused_attention:
        # The padding mask as key lengths [B] (the service pads on the right). A [B,S] mask
        # keeps ONNX Runtime's CUDA kernel off its fused attention paths: measured on an H200,
        # bge-m3's shape in fp16 at 64x200 ran in 30.1 ms with it and 20.4 ms with lengths
        # (bench/results/gpu-mha-mask-experiment-20261126.log); the CPU gives identical scores.
        lengths = b.op("ReduceSum", attention_mask, b.const(np.array([1], dtype=np.int64)), keepdims=0)
        key_padding_mask = b.op("Cast", lengths, to=TensorProto.INT32, hint="key_lengths")
        split_shape = b.const(np.array([0, 0, N, D], dtype=np.int64))

    def rotate_bsnd(t: str) -> str:
        """RoPE on a [B,S,H] tensor viewed as [B,S,N,D] (cos/sin broadcast over heads)."""
        t4 = b.op("Reshape", t, split_shape)
        first, second = b.ops("Split", [t4], 2, "half", axis=-1)
        rotated = b.op("Concat", b.op("Neg", second), first, axis=-1)
        out = b.op("Add", b.op("Mul", t4, cos_s1d), b.op("Mul", rotated, sin_s1d))
        return b.op("Reshape", out, merge_shape, hint="rope")

    if fused_attention and cos is not None:
        cos_s1d = b.op("Unsqueeze", cos, b.const(np.array([1], dtype=np.int64)))  # [S,1,D]
        sin_s1d = b.op("Unsqueeze", sin, b.const(np.array([1], dtype=np.int64)))

    # --- encoder layers (post-LayerNorm) ------------------------------------------------------
    for i in range(spec.num_layers):
        p = f"L{i}."
        if fused_attention:
            qkv = b.linear(x, w[p + "qkv.w"], w[p + "qkv.b"], f"l{i}_qkv")
            q, k, v = b.ops("Split", [qkv], 3, f"l{i}_qkv_split", axis=-1)
            if cos is not None:
                q, k = rotate_bsnd(q), rotate_bsnd(k)
            mha = helper.make_node(
                "MultiHeadAttention",
                [q, k, v, "", key_padding_mask, alibi],
                [b.name(f"l{i}_mha")],
                name=b.name(f"l{i}_mha_node"),
                domain="com.microsoft",
                num_heads=N,
                scale=1.0 / math.sqrt(D),
            )
            b.nodes.append(mha)
            attn = b.linear(mha.output[0], w[p + "o.w"], w[p + "o.b"], f"l{i}_o")
            x = b.layer_norm(
                b.op("Add", attn, x), w[p + "attn_ln.w"], w[p + "attn_ln.b"], spec.layer_norm_eps, f"l{i}_attn_ln"
            )
            x = _feed_forward(b, spec, w, p, i, x)
            continue
        qkv = b.linear(x, w[p + "qkv.w"], w[p + "qkv.b"], f"l{i}_qkv")
        qkv = b.op("Transpose", b.op("Reshape", qkv, qkv_shape), perm=[2, 0, 3, 1, 4])  # [3,B,N,S,D]
        q, k, v = (
            b.op("Squeeze", part, b.const(np.array([0], dtype=np.int64)))
            for part in b.ops("Split", [qkv], 3, f"l{i}_split", axis=0)
        )
        if cos is not None:
            q, k = rotate(q), rotate(k)
        scores = b.op("MatMul", b.op("Mul", q, scale), b.op("Transpose", k, perm=[0, 1, 3, 2]), hint=f"l{i}_scores")
        probs = b.op("Softmax", b.op("Add", scores, bias), axis=-1, hint=f"l{i}_probs")
        context = b.op("Transpose", b.op("MatMul", probs, v), perm=[0, 2, 1, 3])
        context = b.op("Reshape", context, merge_shape, hint=f"l{i}_context")
        attn = b.linear(context, w[p + "o.w"], w[p + "o.b"], f"l{i}_o")
        x = b.layer_norm(
            b.op("Add", attn, x), w[p + "attn_ln.w"], w[p + "attn_ln.b"], spec.layer_norm_eps, f"l{i}_attn_ln"
        )
        x = _feed_forward(b, spec, w, p, i, x)

    # --- classifier head on the first token -------------------------------------------------
    first_token = b.op("Gather", x, b.const(np.array(0, dtype=np.int64)), axis=1, hint="cls")
    if spec.head == "tanh":
        score = b.op("Tanh", b.linear(first_token, w["head.out.w"], w["head.out.b"], "head_out"))
    elif spec.head == "linear":
        score = b.linear(first_token, w["head.out.w"], w["head.out.b"], "head_out")
    else:
        pooled = b.op("Tanh", b.linear(first_token, w["head.dense.w"], w["head.dense.b"], "head_dense"))
        score = b.linear(pooled, w["head.out.w"], w["head.out.b"], "head_out")
    logits = "logits"
    b.nodes.append(
        helper.make_node("Squeeze", [score, b.const(np.array([1], dtype=np.int64))], [logits], name="logits")
    )

    graph = helper.make_graph(
        b.nodes,
        graph_name,
        graph_inputs,
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["batch"])],
        initializer=b.initializers,
    )
    opsets = [helper.make_opsetid("", OPSET)]
    if fused_attention:
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="rerank-convert")
    model.ir_version = 8
    return model


def _feed_forward(b: _Builder, spec: EncoderSpec, w: Weights, p: str, i: int, x: str) -> str:
    """The feed-forward block and its residual LayerNorm."""
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
    return b.layer_norm(b.op("Add", down, x), w[p + "ffn_ln.w"], w[p + "ffn_ln.b"], spec.layer_norm_eps, f"l{i}_ffn_ln")


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


def save(model: onnx.ModelProto, path) -> None:
    """Saves ``model``; weights go to ``<name>.data`` beside it when over protobuf's 2 GiB cap."""
    size = sum(t.ByteSize() for t in model.graph.initializer)
    if size > 1_800_000_000:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{path.name}.data",
            size_threshold=1024,
        )
        (path.parent / f"{path.name}.data").chmod(0o644)  # onnx writes it private; model folders are shared
    else:
        onnx.save_model(model, str(path))
