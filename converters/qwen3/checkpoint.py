"""Reads a Qwen3-Reranker checkpoint folder (the Hub layout) into canonical weights.

``Qwen/Qwen3-Reranker-{0.6B,4B,8B}`` are ``Qwen3ForCausalLM`` checkpoints: ``config.json``
(model_type ``qwen3``), one or several ``*.safetensors`` files (bf16) under transformers' names,
and Qwen2's tokenizer. Only what the score needs is kept of the LM head: its ``no`` and ``yes``
rows (the input embeddings' rows where the head is tied to them, as on 0.6B), read as a slice so
that an 8B head is never loaded whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rerank.converters.errors import CheckpointError
from rerank.converters.qwen3.prompt import MODEL_CARD_MAX_LENGTH, NO, YES
from rerank.converters.qwen3.spec import Qwen3Spec
from rerank.converters.spec import LoadedModel, Weights
from rerank.service.model_folder import file_sha256

ARCHITECTURES = ("Qwen3ForCausalLM",)


def is_qwen3(config: dict[str, Any]) -> bool:
    """Whether ``config.json`` describes a Qwen3 decoder (what this family reads)."""
    return str(config.get("model_type", "")).lower() == "qwen3" or any(
        str(a).startswith("Qwen3For") for a in config.get("architectures") or ()
    )


def _check_config(folder: Path, config: dict[str, Any]) -> None:
    """Refuses what the graph does not compute, naming the setting."""
    architectures = list(config.get("architectures") or ())
    if not set(architectures) & set(ARCHITECTURES):
        raise CheckpointError(
            f"{folder}: architectures {architectures} is not a Qwen3-Reranker checkpoint (Qwen3ForCausalLM); "
            "convert the original Qwen/Qwen3-Reranker-* repository"
        )
    refusals = {
        "hidden_act": (str(config.get("hidden_act", "silu")) != "silu", "only SiLU (SwiGLU) is supported"),
        "use_sliding_window": (bool(config.get("use_sliding_window")), "sliding-window attention is not supported"),
        "rope_scaling": (_rope_type(config) != "default", "only unscaled RoPE is supported"),
    }
    for key, (refused, why) in refusals.items():
        if refused:
            raise CheckpointError(f"{folder}: config.json {key} = {config.get(key)!r}: {why}")


def _rope_type(config: dict[str, Any]) -> str:
    scaling = config.get("rope_scaling") or config.get("rope_parameters") or {}
    return str(scaling.get("rope_type", scaling.get("type", "default")))


def rope_theta(config: dict[str, Any]) -> float:
    params = config.get("rope_parameters") or {}
    return float(params.get("rope_theta", config.get("rope_theta", 10000.0)))


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


def load_checkpoint(folder: Path, config: dict[str, Any], source: str) -> LoadedModel:
    """Reads the checkpoint in ``folder`` (whose ``config.json`` is ``config``)."""
    _check_config(folder, config)
    yes, no, pad = _token_ids(folder)
    t = _Tensors(folder)
    layers, hidden = int(config["num_hidden_layers"]), int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    bias = bool(config.get("attention_bias", False))
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
    tied = bool(config.get("tie_word_embeddings", False)) or "lm_head.weight" not in t
    w["head.w"] = w["emb.word"][[no, yes]].copy() if tied else t.get("lm_head.weight", rows=[no, yes])
    if w["emb.word"].shape[0] <= max(yes, no, pad):
        raise CheckpointError(f"{folder}: the embedding table has {w['emb.word'].shape[0]} rows, fewer than the ids")
    max_positions = int(config.get("max_position_embeddings", MODEL_CARD_MAX_LENGTH))
    spec = Qwen3Spec(
        num_layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=int(config["intermediate_size"]),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        rope_base=rope_theta(config),
        max_length=min(MODEL_CARD_MAX_LENGTH, max_positions),
        yes_id=yes,
        no_id=no,
        pad_id=pad,
        attention_bias=bias,
    )
    dtype = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(
        str(config.get("torch_dtype", config.get("dtype", "float32"))), "fp32"
    )
    return LoadedModel(
        spec=spec,  # type: ignore[arg-type]  # the pipeline reads the fields every spec has
        weights=w,
        source=source,
        source_format="hf",
        files_sha256={f.name: file_sha256(f) for f in t.files},
        source_dtype=dtype,
        layout="qwen3",
    )


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.exists():
        raise CheckpointError(f"{folder}: no config.json")
    return dict(json.loads(path.read_text()))
