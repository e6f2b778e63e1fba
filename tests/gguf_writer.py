"""Writes a GTE checkpoint as a GGUF in GPUStack llama-box's ``new`` layout (test support).

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
from pathlib import Path

import numpy as np
from gguf import GGUFWriter
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
