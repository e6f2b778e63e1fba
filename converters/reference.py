"""Reference scores from the original implementation, to prove a converted graph exact.

* XLM-R and BERT checkpoints: transformers' own ``*ForSequenceClassification``.
* jina-reranker-v2 ("flash" layout): transformers' XLM-R after renaming the weights, which is
  the same math (the remote code is never run).
* GTE "new": transformers' native ``GteForSequenceClassification``.
* JinaBERT: transformers has no class for it; :mod:`converters.jinabert_torch` is a separate
  PyTorch definition written from the published description.

Tokenisation here is the checkpoint's own Hugging Face tokenizer with
``truncation="only_second"``, independent of the service's pair encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from converters.spec import LoadedModel


def hf_tokenize(folder: Path, pairs: list[tuple[str, str]], max_length: int):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return tokenizer(
        [q for q, _ in pairs], [d for _, d in pairs], truncation="only_second", max_length=max_length,
        padding=True, return_tensors="pt",
    )


def _xlmr_from_flash(folder: Path, loaded: LoadedModel):
    """jina-reranker-v2: build transformers' XLM-R and load the flash weights under its names."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    raw = json.loads((folder / "config.json").read_text())
    spec = loaded.spec
    config = XLMRobertaConfig(
        vocab_size=loaded.weights["emb.word"].shape[0], hidden_size=spec.hidden, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.heads, intermediate_size=spec.intermediate, layer_norm_eps=spec.layer_norm_eps,
        max_position_embeddings=int(raw["max_position_embeddings"]), type_vocab_size=max(1, spec.type_vocab),
        pad_token_id=spec.pad_id, num_labels=1,
    )
    model = XLMRobertaForSequenceClassification(config)
    w = loaded.weights
    H = spec.hidden
    state = {
        "roberta.embeddings.word_embeddings.weight": w["emb.word"],
        "roberta.embeddings.position_embeddings.weight": w["emb.pos"],
        "roberta.embeddings.LayerNorm.weight": w["emb.ln.w"], "roberta.embeddings.LayerNorm.bias": w["emb.ln.b"],
        "classifier.dense.weight": w["head.dense.w"], "classifier.dense.bias": w["head.dense.b"],
        "classifier.out_proj.weight": w["head.out.w"], "classifier.out_proj.bias": w["head.out.b"],
    }
    if "emb.type" in w:
        state["roberta.embeddings.token_type_embeddings.weight"] = w["emb.type"]
    for i in range(spec.num_layers):
        p, o = f"roberta.encoder.layer.{i}.", f"L{i}."
        for j, name in enumerate(("query", "key", "value")):
            state[f"{p}attention.self.{name}.weight"] = w[o + "qkv.w"][j * H:(j + 1) * H]
            state[f"{p}attention.self.{name}.bias"] = w[o + "qkv.b"][j * H:(j + 1) * H]
        state.update({
            f"{p}attention.output.dense.weight": w[o + "o.w"], f"{p}attention.output.dense.bias": w[o + "o.b"],
            f"{p}attention.output.LayerNorm.weight": w[o + "attn_ln.w"], f"{p}attention.output.LayerNorm.bias": w[o + "attn_ln.b"],
            f"{p}intermediate.dense.weight": w[o + "up.w"], f"{p}intermediate.dense.bias": w[o + "up.b"],
            f"{p}output.dense.weight": w[o + "down.w"], f"{p}output.dense.bias": w[o + "down.b"],
            f"{p}output.LayerNorm.weight": w[o + "ffn_ln.w"], f"{p}output.LayerNorm.bias": w[o + "ffn_ln.b"],
        })
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise RuntimeError(f"flash -> XLM-R renaming left missing={missing} unexpected={unexpected}")
    return model


def _gte(folder: Path, loaded: LoadedModel):
    """GTE "new": transformers' native Gte class with the same (folded) RoPE parameters."""
    from transformers import GteConfig, GteForSequenceClassification

    spec = loaded.spec
    if spec.rope_position_scale != 1.0:
        raise NotImplementedError("transformers' Gte has no position scaling; cannot serve as reference")
    config = GteConfig(
        vocab_size=loaded.weights["emb.word"].shape[0], hidden_size=spec.hidden, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.heads, intermediate_size=spec.intermediate, layer_norm_eps=spec.layer_norm_eps,
        max_position_embeddings=spec.max_length, type_vocab_size=max(1, spec.type_vocab), pad_token_id=spec.pad_id,
        num_labels=1, rope_parameters={"rope_type": "default", "rope_theta": spec.rope_base},
    )
    return GteForSequenceClassification.from_pretrained(str(folder), config=config)


def reference_model(folder: Path, loaded: LoadedModel):
    """The reference PyTorch module for ``loaded`` (read from ``folder``), in eval mode, fp32."""
    raw = json.loads((folder / "config.json").read_text())
    family = loaded.spec.family
    if family == "jina-bert":
        from converters.jinabert_torch import JinaBertReranker

        model = JinaBertReranker.from_loaded(loaded)
    elif family == "gte":
        model = _gte(folder, loaded)
    elif any(".mixer.Wqkv." in k for k in _tensor_names(folder)):
        model = _xlmr_from_flash(folder, loaded)
    else:
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1, attn_implementation="eager")
    del raw
    return model.float().eval()


def _tensor_names(folder: Path) -> list[str]:
    from safetensors import safe_open

    names: list[str] = []
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "np") as handle:
            names.extend(handle.keys())
    return names


def reference_scores(folder: Path, loaded: LoadedModel, pairs: list[tuple[str, str]]) -> np.ndarray:
    """Logits of the reference implementation for ``pairs`` (float64)."""
    import torch

    model = reference_model(folder, loaded)
    encoded = hf_tokenize(folder, pairs, loaded.spec.max_length)
    scores = []
    with torch.inference_mode():
        for row in range(len(pairs)):
            length = int(encoded["attention_mask"][row].sum())
            inputs = {k: v[row:row + 1, :length] for k, v in encoded.items()}
            if not loaded.spec.type_ids_input:
                inputs.pop("token_type_ids", None)
            scores.append(float(model(**inputs).logits.reshape(-1)[0]))
    return np.asarray(scores, dtype=np.float64)
