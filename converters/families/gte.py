"""GTE "new" cross-encoders (Alibaba-NLP's gte-multilingual-reranker-base).

RoPE with static NTK scaling, a fused ``qkv_proj``, the gated GELU ``up_gate_proj`` = [up |
gate] without bias (``up * gelu(gate)``), post-LN, a pooler and a one-logit classifier. The
checkpoint declares ``model_type: new`` (its remote code, never run); transformers' own ``gte``
classes read its weights.

GGUF: GPUStack llama-box's ``new`` architecture (upstream llama.cpp has none), with the NTK
factor folded into ``rope.freq_base``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rerank.converters.families.encoder as encoder
from rerank.converters.errors import CheckpointError, ConversionError, GgufError
from rerank.converters.families.base import CatalogEntry, Checkpoint, CheckpointLayout, GgufLayout
from rerank.converters.fields import MAX_HEADS, Fields, heads_divide
from rerank.converters.reference import encoder_reference, from_pretrained, load_state, split_qkv, transformers_sizes
from rerank.converters.spec import EncoderSpec, LoadedModel

if TYPE_CHECKING:
    from rerank.converters.gguf_file import GgufFile

NAME = "gte"

NAMES = encoder.EncoderNames(
    layer="encoder.layer.{i}",
    qkv=("attention.qkv_proj",),
    o="attention.o_proj",
    attn_ln="attn_ln",
    up="mlp.up_gate_proj",
    up_bias=False,
    down="mlp.down_proj",
    ffn_ln="mlp_ln",
    head="pooler",
)
MAX_THETA = 1e12
MAX_FACTOR = 1e4


def _spec(max_length: int, rope: tuple[float, float], common: dict[str, Any]) -> EncoderSpec:
    base, scale = rope
    return EncoderSpec(
        family=NAME,
        max_length=max_length,
        positions="rope",
        feed_forward="gelu-gated-second",
        rope_base=base,
        rope_position_scale=scale,
        **common,
    )


def gte_rope(config: Mapping[str, Any] | Fields) -> tuple[float, float]:
    """(base, position scale) of GTE's RoPE, with its static NTK scaling folded in.

    The "new" implementation's static NTK scaling computes inverse frequencies from
    ``base * factor`` and divides them by ``factor ** (2 / d)``: the same as RoPE with base
    ``base * factor`` and positions divided by ``factor ** (2 / d)``, which is what this returns
    (transformers' ``linear`` rope type with that factor). Configs in transformers' own ``gte``
    format carry their final theta and, optionally, a linear factor.
    """
    f = config if isinstance(config, Fields) else Fields(config, "config.json", CheckpointError)
    params, scaling = f.within("rope_parameters"), f.within("rope_scaling")
    theta = params.number("rope_theta", f.number("rope_theta", 160000.0, high=MAX_THETA), high=MAX_THETA)
    kind = scaling.text("type", scaling.text("rope_type", "default"))
    if kind == "ntk":
        factor = scaling.number("factor", high=MAX_FACTOR)
        hidden, heads = f.integer("hidden_size"), f.integer("num_attention_heads", maximum=MAX_HEADS)
        heads_divide(f, hidden, heads, "num_attention_heads")
        return theta * factor, factor ** (2.0 / (hidden // heads))
    if params.raw("rope_type", None) == "linear":
        return theta, params.number("factor", high=MAX_FACTOR)
    return theta, 1.0


def new_rope(f: GgufFile, head_dim: int) -> tuple[float, float]:
    """(base, position scale) for llama-box's ``new`` architecture.

    llama-box folds GTE's static NTK factor ``f`` into ``rope.freq_base = θ · f^(d/(d-1))``
    (inferred from its converter patch; no published file could be checked here). When the file
    also records ``rope.scaling.factor``, θ is recovered and the exact HF rule restored:
    base ``θ·f``, positions divided by ``f^(2/d)``.
    """
    meta = encoder.gguf_fields(f)
    freq_base = meta.number("rope.freq_base", 10000.0, high=MAX_THETA)
    if not meta.raw("rope.scaling.factor", None):
        return freq_base, 1.0
    factor = meta.number("rope.scaling.factor", high=MAX_FACTOR)
    if head_dim < 2:
        raise GgufError(f"{f.path}: a head dimension of {head_dim} leaves nothing for RoPE to rotate")
    theta = freq_base / factor ** (head_dim / (head_dim - 1))
    return theta * factor, factor ** (2.0 / head_dim)


def _checkpoint_spec(ck: Checkpoint, parts: encoder.Parts) -> EncoderSpec:
    return _spec(encoder.max_positions(ck), gte_rope(ck.config), parts.common)


def _gguf_spec(f: GgufFile, parts: encoder.Parts) -> EncoderSpec:
    spec = _spec(encoder.gguf_context(f), new_rope(f, parts.sizes.hidden // parts.sizes.heads), parts.common)
    if not encoder.gguf_fields(f).raw("rope.scaling.factor", None):
        parts.notes.append("the GGUF records no RoPE scaling factor: RoPE runs unscaled with the file's freq_base")
    return spec


def _mark(config: Mapping[str, Any], names: frozenset[str]) -> bool:
    return any(".up_gate_proj." in name for name in names)


def gte_rope_parameters(spec: EncoderSpec) -> dict:
    """transformers' rope settings for our (base, position scale) form of GTE's NTK RoPE."""
    if spec.rope_position_scale == 1.0:
        return {"rope_type": "default", "rope_theta": spec.rope_base}
    return {"rope_type": "linear", "rope_theta": spec.rope_base, "factor": spec.rope_position_scale}


def _gte_config(loaded: LoadedModel) -> Any:
    from transformers import GteConfig

    spec = loaded.spec
    assert isinstance(spec, EncoderSpec)
    return GteConfig(
        max_position_embeddings=spec.max_length, rope_parameters=gte_rope_parameters(spec), **transformers_sizes(loaded)
    )


def _gte_state(loaded: LoadedModel) -> dict[str, Any]:
    """Canonical weights -> transformers' ``GteForSequenceClassification`` names."""
    spec, w = loaded.spec, loaded.weights
    assert isinstance(spec, EncoderSpec)
    state = {
        "gte.embeddings.word_embeddings.weight": w["emb.word"],
        "gte.embeddings.LayerNorm.weight": w["emb.ln.w"],
        "gte.embeddings.LayerNorm.bias": w["emb.ln.b"],
    }
    if "emb.type" in w:
        state["gte.embeddings.token_type_embeddings.weight"] = w["emb.type"]
    I = spec.intermediate
    for i in range(spec.num_layers):
        p, o = f"gte.layers.{i}.", f"L{i}."
        for (wt, bs), name in zip(split_qkv(w, o, spec.hidden), "qkv", strict=False):
            state[f"{p}self_attn.{name}_proj.weight"], state[f"{p}self_attn.{name}_proj.bias"] = wt, bs
        state.update(
            {
                f"{p}self_attn.o_proj.weight": w[o + "o.w"],
                f"{p}self_attn.o_proj.bias": w[o + "o.b"],
                f"{p}post_attention_layernorm.weight": w[o + "attn_ln.w"],
                f"{p}post_attention_layernorm.bias": w[o + "attn_ln.b"],
                f"{p}mlp.up_proj.weight": w[o + "up.w"][:I],
                f"{p}mlp.gate_proj.weight": w[o + "up.w"][I:],
                f"{p}mlp.down_proj.weight": w[o + "down.w"],
                f"{p}mlp.down_proj.bias": w[o + "down.b"],
                f"{p}post_mlp_layernorm.weight": w[o + "ffn_ln.w"],
                f"{p}post_mlp_layernorm.bias": w[o + "ffn_ln.b"],
            }
        )
    state.update(
        {
            "gte.pooler.dense.weight": w["head.dense.w"],
            "gte.pooler.dense.bias": w["head.dense.b"],
            "classifier.weight": w["head.out.w"],
            "classifier.bias": w["head.out.b"],
        }
    )
    return state


def _reference_model(folder: Path | None, loaded: LoadedModel) -> Any:
    """transformers reads the "new" checkpoint's weights itself (its gte conversion mapping);
    only the config, which it cannot read (model_type "new"), is translated. A GGUF goes
    through our weights."""
    from transformers import GteForSequenceClassification

    if folder is not None and loaded.layout == NAME:
        config = _gte_config(loaded)
        return from_pretrained(lambda: GteForSequenceClassification.from_pretrained(str(folder), config=config), folder)
    if "head.dense.w" not in loaded.weights:
        raise ConversionError("transformers' GTE has no form without its pooler, so this file cannot be verified")
    return load_state(GteForSequenceClassification(_gte_config(loaded)), _gte_state(loaded))


FAMILY = encoder.family(
    NAME,
    checkpoints=(
        CheckpointLayout(
            NAME,
            lambda ck: encoder.read_checkpoint(ck, NAMES, _checkpoint_spec),
            model_types=("new", "gte"),
            architectures=("NewForSequenceClassification", "GteForSequenceClassification"),
            mark=_mark,
        ),
    ),
    ggufs=(GgufLayout("new", lambda f: encoder.read_gguf(f, "pooler", _gguf_spec), encoder.gguf_tokenizer),),
    reference=encoder_reference(_reference_model),
    catalog=(
        CatalogEntry(
            "gte-multilingual-reranker-base",
            "Alibaba-NLP/gte-multilingual-reranker-base",
            "gpustack/gte-multilingual-reranker-base-GGUF",
            NAME,
            "306M",
            8192,
            "apache-2.0",
        ),
    ),
)
