"""GGUF test support: checkpoints written as GGUFs in published layouts, and a map of a GGUF's fields.

:func:`write_llama_box_gte` writes a GTE checkpoint in GPUStack llama-box's ``new`` layout.

Upstream llama.cpp has no converter for GTE, and the llama-box converter is not available here,
so this reproduces the layout its converter writes (from llama-box's converter patch):
architecture ``new``; ``token_embd``, ``token_types``, ``token_embd_norm``; per block a fused
``attn_qkv``, ``attn_output``, ``attn_output_norm``, ``ffn_up`` = the checkpoint's
``up_gate_proj`` as is ([up | gate], no bias), ``ffn_down``, ``layer_output_norm``; ``cls`` =
the pooler dense, ``cls.output`` = the classifier; the NTK factor folded into ``rope.freq_base``
(θ·f^(d/(d-1))) and also recorded as ``rope.scaling.factor``; the tokenizer as XLM-R's Unigram
with the charsmap stored as a base64 string (a quirk of that converter).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFValueType, GGUFWriter
from gguf.gguf_writer import GGUFValue
from safetensors.numpy import load_file

from rerank.converters.gguf_file import GgufFile


def write_llama_box_gte(checkpoint: Path, out: Path, tokenizer_source: Path) -> Path:
    """``tokenizer_source``: a llama.cpp-converted GGUF of an XLM-R checkpoint with the same
    tokenizer, whose ``tokenizer.ggml.*`` metadata is copied."""
    cfg = json.loads((checkpoint / "config.json").read_text())
    t = {k: v.astype(np.float32) for k, v in load_file(str(checkpoint / "model.safetensors")).items()}
    d = cfg["hidden_size"] // cfg["num_attention_heads"]
    theta, factor = float(cfg["rope_theta"]), float(cfg["rope_scaling"]["factor"])
    w = GGUFWriter(str(out), "new")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_layer_norm_eps(cfg["layer_norm_eps"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_rope_freq_base(theta * factor ** (d / (d - 1)))
    w.add_rope_scaling_factor(factor)
    w.add_causal_attention(False)

    tok = GgufFile.open(tokenizer_source).metadata
    w.add_tokenizer_model("t5")
    w.add_tokenizer_pre("default")
    w.add_token_list(tok["tokenizer.ggml.tokens"])
    w.add_token_scores(np.asarray(tok["tokenizer.ggml.scores"], dtype=np.float32).tolist())
    w.add_token_types(np.asarray(tok["tokenizer.ggml.token_type"], dtype=np.int32).tolist())
    charsmap = tok["tokenizer.ggml.precompiled_charsmap"]
    w.add_string(
        "tokenizer.ggml.precompiled_charsmap", base64.b64encode(np.asarray(charsmap, np.uint8).tobytes()).decode()
    )
    for key in ("bos", "eos", "unknown", "seperator", "padding"):
        w.add_uint32(f"tokenizer.ggml.{key}_token_id", int(tok[f"tokenizer.ggml.{key}_token_id"]))
    w.add_add_space_prefix(False)  # the quirk: written false for XLM-R tokenizers

    p = "new."
    w.add_tensor("token_embd.weight", t[p + "embeddings.word_embeddings.weight"])
    w.add_tensor("token_types.weight", t[p + "embeddings.token_type_embeddings.weight"])
    w.add_tensor("token_embd_norm.weight", t[p + "embeddings.LayerNorm.weight"])
    w.add_tensor("token_embd_norm.bias", t[p + "embeddings.LayerNorm.bias"])
    for i in range(cfg["num_hidden_layers"]):
        s, b = f"{p}encoder.layer.{i}.", f"blk.{i}."
        for src, dst in (
            ("attention.qkv_proj", "attn_qkv"),
            ("attention.o_proj", "attn_output"),
            ("attn_ln", "attn_output_norm"),
            ("mlp.down_proj", "ffn_down"),
            ("mlp_ln", "layer_output_norm"),
        ):
            w.add_tensor(f"{b}{dst}.weight", t[f"{s}{src}.weight"])
            w.add_tensor(f"{b}{dst}.bias", t[f"{s}{src}.bias"])
        w.add_tensor(f"{b}ffn_up.weight", t[f"{s}mlp.up_gate_proj.weight"])
    w.add_tensor("cls.weight", t[p + "pooler.dense.weight"])
    w.add_tensor("cls.bias", t[p + "pooler.dense.bias"])
    w.add_tensor("cls.output.weight", t["classifier.weight"])
    w.add_tensor("cls.output.bias", t["classifier.bias"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


# --- an XLM-R checkpoint in llama.cpp's layout, and the structure of any GGUF ----------------------

_CONTROL, _UNKNOWN, _NORMAL = 3, 2, 1


def xlmr_gguf_parts(checkpoint: Path) -> tuple[dict[str, GGUFValue], dict[str, np.ndarray]]:
    """(metadata, tensors) of the ``xlmr`` fixture checkpoint as llama.cpp's converter lays it out
    (architecture ``bert``, Unigram ``t5`` tokenizer, q/k/v apart, the pooler kept as ``cls``):
    the parts a test edits before :func:`write_gguf`. Built from the checkpoint's own files with
    the gguf package, independent of the converter's reader."""
    cfg = json.loads((checkpoint / "config.json").read_text())
    t = {k: v.astype(np.float32) for k, v in load_file(str(checkpoint / "model.safetensors")).items()}
    tok = json.loads((checkpoint / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    pieces = [piece for piece, _ in vocab]
    specials = {"<s>", "<pad>", "</s>", "<mask>"}
    types = [_CONTROL if p in specials else _UNKNOWN if p == "<unk>" else _NORMAL for p in pieces]
    normalizer = tok["normalizer"]
    steps = normalizer.get("normalizers", [normalizer])
    charsmap = next(base64.b64decode(s["precompiled_charsmap"]) for s in steps if s["type"] == "Precompiled")
    pad = cfg["pad_token_id"]
    A, S = GGUFValueType.ARRAY, GGUFValueType.STRING
    U32, F32 = GGUFValueType.UINT32, GGUFValueType.FLOAT32
    metadata = {
        "general.architecture": GGUFValue("bert", S),
        "bert.block_count": GGUFValue(cfg["num_hidden_layers"], U32),
        "bert.context_length": GGUFValue(cfg["max_position_embeddings"] - pad - 1, U32),
        "bert.embedding_length": GGUFValue(cfg["hidden_size"], U32),
        "bert.feed_forward_length": GGUFValue(cfg["intermediate_size"], U32),
        "bert.attention.head_count": GGUFValue(cfg["num_attention_heads"], U32),
        "bert.attention.layer_norm_epsilon": GGUFValue(cfg["layer_norm_eps"], F32),
        "bert.attention.causal": GGUFValue(False, GGUFValueType.BOOL),
        "tokenizer.ggml.model": GGUFValue("t5", S),
        "tokenizer.ggml.pre": GGUFValue("default", S),
        "tokenizer.ggml.tokens": GGUFValue(pieces, A, S),
        "tokenizer.ggml.scores": GGUFValue([float(score) for _, score in vocab], A, F32),
        "tokenizer.ggml.token_type": GGUFValue(types, A, GGUFValueType.INT32),
        "tokenizer.ggml.precompiled_charsmap": GGUFValue(list(charsmap), A, GGUFValueType.UINT8),
        "tokenizer.ggml.bos_token_id": GGUFValue(pieces.index("<s>"), U32),
        "tokenizer.ggml.eos_token_id": GGUFValue(pieces.index("</s>"), U32),
        "tokenizer.ggml.unknown_token_id": GGUFValue(pieces.index("<unk>"), U32),
        "tokenizer.ggml.seperator_token_id": GGUFValue(pieces.index("</s>"), U32),
        "tokenizer.ggml.padding_token_id": GGUFValue(pad, U32),
        "tokenizer.ggml.cls_token_id": GGUFValue(pieces.index("<s>"), U32),
        "tokenizer.ggml.mask_token_id": GGUFValue(pieces.index("<mask>"), U32),
    }
    p = "roberta."
    tensors = {
        "token_embd.weight": t[p + "embeddings.word_embeddings.weight"],
        "position_embd.weight": t[p + "embeddings.position_embeddings.weight"][pad + 1 :],
        "token_types.weight": t[p + "embeddings.token_type_embeddings.weight"],
        "token_embd_norm.weight": t[p + "embeddings.LayerNorm.weight"],
        "token_embd_norm.bias": t[p + "embeddings.LayerNorm.bias"],
    }
    for i in range(cfg["num_hidden_layers"]):
        s, b = f"{p}encoder.layer.{i}.", f"blk.{i}."
        for src, dst in (
            ("attention.self.query", "attn_q"),
            ("attention.self.key", "attn_k"),
            ("attention.self.value", "attn_v"),
            ("attention.output.dense", "attn_output"),
            ("attention.output.LayerNorm", "attn_output_norm"),
            ("intermediate.dense", "ffn_up"),
            ("output.dense", "ffn_down"),
            ("output.LayerNorm", "layer_output_norm"),
        ):
            tensors[f"{b}{dst}.weight"], tensors[f"{b}{dst}.bias"] = t[f"{s}{src}.weight"], t[f"{s}{src}.bias"]
    for src, dst in (("classifier.dense", "cls"), ("classifier.out_proj", "cls.output")):
        tensors[f"{dst}.weight"], tensors[f"{dst}.bias"] = t[f"{src}.weight"], t[f"{src}.bias"]
    return metadata, tensors


def write_gguf(path: Path, metadata: dict[str, GGUFValue], tensors: dict[str, np.ndarray]) -> Path:
    """Writes ``metadata`` (in order, ``general.architecture`` included or not) and ``tensors``
    with the gguf package's writer."""
    writer = GGUFWriter(str(path), "unused")
    writer.kv_data[0] = dict(metadata)
    try:
        for name, array in tensors.items():
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


@dataclass(frozen=True)
class Piece:
    """One field of a GGUF file, as :func:`gguf_pieces` finds it."""

    kind: str
    """``magic``, ``version``, ``tensor_count``, ``kv_count``, ``key_length``, ``key``,
    ``value_type``, ``item_type``, ``item_count``, ``string_length``, ``string``, ``scalar``,
    ``name_length``, ``name``, ``n_dims``, ``dim``, ``tensor_type``, ``tensor_offset``, ``data``."""
    offset: int
    size: int
    label: str
    """The key or tensor it belongs to."""

    @property
    def end(self) -> int:
        return self.offset + self.size


_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_pieces(data: bytes) -> list[Piece]:
    """Every field of a well-formed little-endian GGUF (v2/v3), front to back: the map a
    structure-aware mutation picks from. A plain walk of the format, sharing no code with the
    converter's reader."""
    pieces: list[Piece] = []
    pos = 0

    def take(kind: str, size: int, label: str = "") -> int:
        nonlocal pos
        pieces.append(Piece(kind, pos, size, label))
        value = int.from_bytes(data[pos : pos + size], "little") if size <= 8 else 0
        pos += size
        return value

    def string(kind: str, label: str) -> str:
        n = take(f"{kind}_length" if kind != "string" else "string_length", 8, label)
        start = pos
        take(kind, n, label)
        return data[start : start + n].decode("utf-8", "replace")

    def value(kind: int, label: str) -> None:
        if kind == 8:
            string("string", label)
        elif kind == 9:
            item = take("item_type", 4, label)
            for _ in range(take("item_count", 8, label)):
                value(item, label)
        else:
            take("scalar", _SCALAR_BYTES[kind], label)

    take("magic", 4)
    take("version", 4)
    tensors, keys = take("tensor_count", 8), take("kv_count", 8)
    for _ in range(keys):
        key = string("key", "")
        value(take("value_type", 4, key), key)
    for _ in range(tensors):
        name = string("name", "")
        for _ in range(take("n_dims", 4, name)):
            take("dim", 8, name)
        take("tensor_type", 4, name)
        take("tensor_offset", 8, name)
    pieces.append(Piece("data", pos, len(data) - pos, ""))
    return pieces
