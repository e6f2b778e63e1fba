"""Reference scores from the original implementation, to prove a converted graph exact.

* XLM-R, BERT and GTE checkpoints: transformers' own classes, loaded from the checkpoint folder
  by transformers itself (``from_pretrained``), independent of our weight reader.
* jina-reranker-v2 ("flash" layout) and every GGUF file: transformers' class for the family,
  given the weights our reader produced (the remote code is never run).
* JinaBERT: transformers has no class for it; :mod:`rerank.converters.jinabert_torch` is a separate
  PyTorch definition written from the published description.
* The ``tanh`` and ``linear`` heads of pooler-less GGUFs (what llama.cpp computes) sit on top
  of the transformers backbone.

Tokenisation here is the Hugging Face tokenizer with ``truncation="only_second"``, independent
of the service's pair encoder.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from rerank.converters.errors import ConversionError
from rerank.converters.spec import LoadedModel


def hf_tokenize(tokenizer, pairs: list[tuple[str, str]], max_length: int):
    return tokenizer(
        [q for q, _ in pairs],
        [d for _, d in pairs],
        truncation="only_second",
        max_length=max_length,
        padding=True,
        return_token_type_ids=True,
        return_tensors="pt",
    )


def _split_qkv(w: dict, o: str, H: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(w[o + "qkv.w"][j * H : (j + 1) * H], w[o + "qkv.b"][j * H : (j + 1) * H]) for j in range(3)]


def _bert_like_state(loaded: LoadedModel, prefix: str) -> dict[str, np.ndarray]:
    """Canonical weights -> transformers' BERT/XLM-R backbone names (without the head)."""
    spec, w = loaded.spec, loaded.weights
    state = {
        f"{prefix}embeddings.word_embeddings.weight": w["emb.word"],
        f"{prefix}embeddings.LayerNorm.weight": w["emb.ln.w"],
        f"{prefix}embeddings.LayerNorm.bias": w["emb.ln.b"],
    }
    if "emb.pos" in w:
        state[f"{prefix}embeddings.position_embeddings.weight"] = w["emb.pos"]
    if "emb.type" in w:
        state[f"{prefix}embeddings.token_type_embeddings.weight"] = w["emb.type"]
    for i in range(spec.num_layers):
        p, o = f"{prefix}encoder.layer.{i}.", f"L{i}."
        for (wt, bs), name in zip(_split_qkv(w, o, spec.hidden), ("query", "key", "value"), strict=False):
            state[f"{p}attention.self.{name}.weight"], state[f"{p}attention.self.{name}.bias"] = wt, bs
        state.update(
            {
                f"{p}attention.output.dense.weight": w[o + "o.w"],
                f"{p}attention.output.dense.bias": w[o + "o.b"],
                f"{p}attention.output.LayerNorm.weight": w[o + "attn_ln.w"],
                f"{p}attention.output.LayerNorm.bias": w[o + "attn_ln.b"],
                f"{p}intermediate.dense.weight": w[o + "up.w"],
                f"{p}intermediate.dense.bias": w[o + "up.b"],
                f"{p}output.dense.weight": w[o + "down.w"],
                f"{p}output.dense.bias": w[o + "down.b"],
                f"{p}output.LayerNorm.weight": w[o + "ffn_ln.w"],
                f"{p}output.LayerNorm.bias": w[o + "ffn_ln.b"],
            }
        )
    return state


def _gte_state(loaded: LoadedModel) -> dict[str, np.ndarray]:
    spec, w = loaded.spec, loaded.weights
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
        for (wt, bs), name in zip(_split_qkv(w, o, spec.hidden), "qkv", strict=False):
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
    return state


def _load(model, state: dict[str, np.ndarray]):
    import torch

    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}, strict=False
    )
    missing = [m for m in missing if "position_ids" not in m]
    if unexpected or missing:
        raise ConversionError(
            f"the reference model does not take these weights: missing={missing} unexpected={unexpected}"
        )
    return model


class _PoolerlessHead:
    """tanh(out(h0)) or out(h0) on a transformers backbone: llama.cpp's heads for pooler-less GGUFs."""

    def __init__(self, backbone, loaded: LoadedModel) -> None:
        import torch

        self.backbone = backbone.float().eval()
        self.tanh = loaded.spec.head == "tanh"
        self.w = torch.from_numpy(np.array(loaded.weights["head.out.w"]))
        self.b = torch.from_numpy(np.array(loaded.weights["head.out.b"]))

    def __call__(self, **inputs):
        import torch

        logits = self.backbone(**inputs).last_hidden_state[:, 0] @ self.w.T + self.b
        return SimpleNamespace(logits=torch.tanh(logits) if self.tanh else logits)


def gte_rope_parameters(spec) -> dict:
    """transformers' rope settings for our (base, position scale) form of GTE's NTK RoPE."""
    if spec.rope_position_scale == 1.0:
        return {"rope_type": "default", "rope_theta": spec.rope_base}
    return {"rope_type": "linear", "rope_theta": spec.rope_base, "factor": spec.rope_position_scale}


def _sizes(loaded: LoadedModel) -> dict:
    """transformers config arguments every family shares, from the spec."""
    spec = loaded.spec
    return {
        "vocab_size": loaded.weights["emb.word"].shape[0],
        "hidden_size": spec.hidden,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.heads,
        "intermediate_size": spec.intermediate,
        "layer_norm_eps": spec.layer_norm_eps,
        "type_vocab_size": max(1, spec.type_vocab),
        "pad_token_id": spec.pad_id,
        "num_labels": 1,
    }


def _gte_config(loaded: LoadedModel):
    from transformers import GteConfig

    spec = loaded.spec
    return GteConfig(
        max_position_embeddings=spec.max_length, rope_parameters=gte_rope_parameters(spec), **_sizes(loaded)
    )


def model_from_weights(loaded: LoadedModel):
    """A transformers (or JinaBERT) reference module built from canonical weights."""
    spec, w = loaded.spec, loaded.weights
    if spec.family == "jina-bert":
        from rerank.converters.jinabert_torch import JinaBertReranker

        return JinaBertReranker(loaded)
    if spec.family == "gte":
        from transformers import GteForSequenceClassification

        config = _gte_config(loaded)
        state = _gte_state(loaded)
        state.update(
            {
                "gte.pooler.dense.weight": w["head.dense.w"],
                "gte.pooler.dense.bias": w["head.dense.b"],
                "classifier.weight": w["head.out.w"],
                "classifier.bias": w["head.out.b"],
            }
        )
        return _load(GteForSequenceClassification(config), state)
    import transformers

    config_cls, model_cls, backbone_cls, prefix, head_names = _BERT_LIKE[spec.family]
    config = getattr(transformers, config_cls)(max_position_embeddings=w["emb.pos"].shape[0], **_sizes(loaded))
    if spec.head in ("tanh", "linear"):
        backbone = getattr(transformers, backbone_cls)(config, add_pooling_layer=False)
        return _PoolerlessHead(_load(backbone, _bert_like_state(loaded, "")), loaded)
    state = _bert_like_state(loaded, prefix)
    state.update({theirs: w[ours] for theirs, ours in head_names.items()})
    return _load(getattr(transformers, model_cls)(config), state)


_BERT_LIKE = {
    # family: (config class, classifier class, backbone class, backbone prefix, head weight names)
    "xlm-roberta": (
        "XLMRobertaConfig",
        "XLMRobertaForSequenceClassification",
        "XLMRobertaModel",
        "roberta.",
        {
            "classifier.dense.weight": "head.dense.w",
            "classifier.dense.bias": "head.dense.b",
            "classifier.out_proj.weight": "head.out.w",
            "classifier.out_proj.bias": "head.out.b",
        },
    ),
    "bert": (
        "BertConfig",
        "BertForSequenceClassification",
        "BertModel",
        "bert.",
        {
            "bert.pooler.dense.weight": "head.dense.w",
            "bert.pooler.dense.bias": "head.dense.b",
            "classifier.weight": "head.out.w",
            "classifier.bias": "head.out.b",
        },
    ),
}


def reference_model(folder: Path | None, loaded: LoadedModel):
    """The reference module: transformers ``from_pretrained`` where the checkpoint is in a layout
    transformers reads itself, else one built from our canonical weights."""
    layout = loaded.layout
    if folder is not None and layout in ("xlm-roberta", "bert"):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1)
    if folder is not None and layout == "gte":
        # transformers reads the "new" checkpoint's weights itself (its gte conversion mapping);
        # only the config, which it cannot read (model_type "new"), is translated.
        from transformers import GteForSequenceClassification

        return GteForSequenceClassification.from_pretrained(str(folder), config=_gte_config(loaded))
    return model_from_weights(loaded)


def reference_scores(model, tokenizer, pairs: list[tuple[str, str]], max_length: int, type_ids: bool) -> np.ndarray:
    """Logits of ``model`` for ``pairs`` tokenised by the HF ``tokenizer`` (float64), one pair at a time."""
    import torch

    encoded = hf_tokenize(tokenizer, pairs, max_length)
    scores = []
    with torch.inference_mode():
        if hasattr(model, "eval"):
            model.float().eval()
        for row in range(len(pairs)):
            length = int(encoded["attention_mask"][row].sum())
            inputs = {k: v[row : row + 1, :length] for k, v in encoded.items()}
            if not type_ids:
                inputs.pop("token_type_ids", None)
            scores.append(float(model(**inputs).logits.reshape(-1)[0]))
    return np.asarray(scores, dtype=np.float64)
