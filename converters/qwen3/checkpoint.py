"""Reads a Qwen3-Reranker checkpoint folder (the Hub layout) into canonical weights.

``Qwen/Qwen3-Reranker-{0.6B,4B,8B}`` are ``Qwen3ForCausalLM`` checkpoints: ``config.json``
(model_type ``qwen3``), one or several ``*.safetensors`` files (bf16) under transformers' names,
and Qwen2's tokenizer. Only what the score needs is kept of the LM head: its ``no`` and ``yes``
rows (the input embeddings' rows where the head is tied to them, as on 0.6B), read as a slice so
that an 8B head is never loaded whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rerank.converters.errors import CheckpointError
from rerank.converters.families.base import Checkpoint, Read
from rerank.converters.fields import MAX_HEADS, MAX_INTERMEDIATE, MAX_LAYERS, Fields
from rerank.converters.qwen3.prompt import MODEL_CARD_MAX_LENGTH, NO, YES
from rerank.converters.qwen3.spec import ARCHITECTURES, Qwen3Spec
from rerank.converters.spec import Weights

MAX_POSITIONS = 1 << 24
"""``max_position_embeddings`` a config may declare (the model folder reads at most the model card's 8192)."""
DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def _check_config(folder: Path, config: Fields) -> None:
    """Refuses what the graph does not compute, naming the setting."""
    architectures = config.raw("architectures", None)
    if not isinstance(architectures, list) or not set(map(str, architectures)) & set(ARCHITECTURES):
        raise CheckpointError(
            f"{folder}: architectures {architectures} is not a Qwen3-Reranker checkpoint (Qwen3ForCausalLM); "
            "convert the original Qwen/Qwen3-Reranker-* repository"
        )
    refusals = {
        "hidden_act": (config.text("hidden_act", "silu") != "silu", "only SiLU (SwiGLU) is supported"),
        "use_sliding_window": (
            bool(config.raw("use_sliding_window", False)),
            "sliding-window attention is not supported",
        ),
        "rope_scaling": (_rope_type(config) != "default", "only unscaled RoPE is supported"),
    }
    for key, (refused, why) in refusals.items():
        if refused:
            raise CheckpointError(f"{folder}: config.json {key} = {config.raw(key, None)!r}: {why}")


def _rope_type(config: Fields) -> str:
    scaling = config.mapping("rope_scaling") or config.mapping("rope_parameters")
    return str(scaling.get("rope_type", scaling.get("type", "default")))


def rope_theta(config: Fields) -> float:
    """RoPE's base: ``rope_parameters.rope_theta`` (transformers 5), else ``rope_theta``."""
    return config.within("rope_parameters").number("rope_theta", config.number("rope_theta", 10000.0))


class _Tensors:
    """Every tensor of the folder's safetensors files, read one at a time on demand."""

    def __init__(self, folder: Path) -> None:
        from safetensors import safe_open

        self.files = sorted(folder.glob("*.safetensors"))
        if not self.files:
            raise CheckpointError(f"{folder}: no *.safetensors files (Qwen3-Reranker checkpoints are safetensors)")
        self._handles = [safe_open(str(f), framework="pt") for f in self.files]
        self._where = {name: h for h in self._handles for name in h.keys()}  # noqa: SIM118 - not iterable

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def get(self, name: str, rows: list[int] | None = None) -> np.ndarray:
        """Tensor ``name`` as float32 (only ``rows`` of it, when given)."""
        handle = self._where.get(name)
        if handle is None:
            raise CheckpointError(f"missing tensor {name!r}")
        if rows is None:
            tensor = handle.get_tensor(name)
        else:
            part = handle.get_slice(name)
            import torch

            tensor = torch.stack([part[r : r + 1][0] for r in rows])
        return tensor.float().numpy()


def _token_ids(folder: Path) -> tuple[int, int, int]:
    """(yes, no, pad) ids as the model card reads them: ``convert_tokens_to_ids``, and the
    tokenizer's pad token (``<|endoftext|>``)."""
    from transformers import AutoTokenizer

    from rerank.converters.quiet import quiet_transformers

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}: transformers cannot build its tokenizer: {exc}") from exc
    yes, no = (tokenizer.convert_tokens_to_ids(t) for t in (YES, NO))
    unknown = tokenizer.unk_token_id
    for token, i in ((YES, yes), (NO, no)):
        if i is None or i == unknown:
            raise CheckpointError(f"{folder}: the tokenizer has no single token {token!r}: not a Qwen3-Reranker")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(yes), int(no), int(pad or 0)


def read_checkpoint(ck: Checkpoint) -> Read:
    """Reads the checkpoint ``ck``: sizes through its checked config, tensors one at a time, the
    LM head's two rows as a slice."""
    folder, config = ck.folder, ck.config
    _check_config(folder, config)
    layers = config.integer("num_hidden_layers", maximum=MAX_LAYERS)
    hidden = config.integer("hidden_size")
    heads = config.integer("num_attention_heads", maximum=MAX_HEADS)
    kv_heads = config.integer("num_key_value_heads", heads, maximum=heads)
    if heads % kv_heads:
        raise config.fail("num_key_value_heads", f"is {kv_heads}, which does not divide the {heads} query heads")
    head_dim = config.integer("head_dim", max(1, hidden // heads))
    if head_dim % 2:
        raise config.fail("head_dim", f"is {head_dim}; RoPE needs an even head dimension")
    intermediate = config.integer("intermediate_size", maximum=MAX_INTERMEDIATE)
    eps = config.number("rms_norm_eps", 1e-6, high=1.0)
    base = rope_theta(config)
    max_positions = config.integer("max_position_embeddings", MODEL_CARD_MAX_LENGTH, maximum=MAX_POSITIONS)
    bias = bool(config.raw("attention_bias", False))
    yes, no, pad = _token_ids(folder)
    t = _Tensors(folder)
    w: Weights = {"emb.word": t.get("model.embed_tokens.weight"), "norm": t.get("model.norm.weight")}
    for i in range(layers):
        p, o = f"model.layers.{i}.", f"L{i}."
        w[o + "attn_norm"] = t.get(p + "input_layernorm.weight")
        for name in ("q", "k", "v", "o"):
            w[f"{o}{name}.w"] = t.get(f"{p}self_attn.{name}_proj.weight")
            if bias and name != "o":
                w[f"{o}{name}.b"] = t.get(f"{p}self_attn.{name}_proj.bias")
        w[o + "q_norm"], w[o + "k_norm"] = t.get(p + "self_attn.q_norm.weight"), t.get(p + "self_attn.k_norm.weight")
        w[o + "ffn_norm"] = t.get(p + "post_attention_layernorm.weight")
        for name in ("gate", "up", "down"):
            w[f"{o}{name}.w"] = t.get(f"{p}mlp.{name}_proj.weight")
    rows = w["emb.word"].shape[0] if w["emb.word"].ndim == 2 else 0
    if rows <= max(yes, no, pad):
        raise CheckpointError(f"{folder}: the embedding table has {rows} rows, fewer than the tokenizer's ids")
    tied = bool(config.raw("tie_word_embeddings", False)) or "lm_head.weight" not in t
    w["head.w"] = w["emb.word"][[no, yes]].copy() if tied else t.get("lm_head.weight", rows=[no, yes])
    spec = Qwen3Spec(
        num_layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=intermediate,
        rms_norm_eps=eps,
        rope_base=base,
        max_length=min(MODEL_CARD_MAX_LENGTH, max_positions),
        yes_id=yes,
        no_id=no,
        pad_id=pad,
        attention_bias=bias,
    )
    dtype = config.raw("torch_dtype", None) or config.raw("dtype", "float32")
    return Read(spec, w, source_dtype=DTYPES.get(str(dtype), "fp32"))
