"""Reference scores from the original implementation, to prove a converted encoder graph exact.

What the encoder families share; each family picks its reference model
(:mod:`rerank.converters.families`):

* checkpoints in a layout transformers reads itself (XLM-R, BERT, GTE): transformers' own
  classes, loaded from the checkpoint folder by transformers (``from_pretrained``), independent
  of our weight reader;
* other layouts (jina-reranker-v2's "flash" names) and every GGUF file: transformers' class for
  the family, given the weights our reader produced (the remote code is never run);
* JinaBERT: transformers has no class for it; :mod:`rerank.converters.jinabert_torch` is a separate
  PyTorch definition written from the published description;
* the ``tanh`` and ``linear`` heads of pooler-less GGUFs (what llama.cpp computes) sit on top
  of the transformers backbone.

Tokenisation here is the Hugging Face tokenizer with ``truncation="only_second"``, independent
of the service's pair encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from rerank.converters.errors import CheckpointError, ConversionError
from rerank.converters.families.base import Reference
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


def split_qkv(w: dict, o: str, H: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Layer ``o``'s stacked q/k/v weight and bias, as (weight, bias) of q, k and v."""
    return [(w[o + "qkv.w"][j * H : (j + 1) * H], w[o + "qkv.b"][j * H : (j + 1) * H]) for j in range(3)]


def bert_like_state(loaded: LoadedModel, prefix: str) -> dict[str, np.ndarray]:
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
        for (wt, bs), name in zip(split_qkv(w, o, spec.hidden), ("query", "key", "value"), strict=False):
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


def load_state(model, state: dict[str, np.ndarray]):
    """``model`` with ``state`` loaded; refuses weights it does not take, or lacks."""
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


def transformers_sizes(loaded: LoadedModel) -> dict:
    """transformers config arguments every encoder family shares, from the spec."""
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


@dataclass(frozen=True)
class BertLike:
    """transformers' classes of a BERT-shaped family, and where its head's weights go."""

    config: str
    classifier: str
    backbone: str
    prefix: str
    """The backbone's prefix in the classifier's state (``roberta.``, ``bert.``)."""
    head_names: dict[str, str]
    """transformers' head weight name -> canonical name."""


def bert_like_model(loaded: LoadedModel, classes: BertLike) -> Any:
    """transformers' classifier of a BERT-shaped family given the canonical weights (for the
    pooler-less heads: its backbone, and that head on top)."""
    import transformers

    w = loaded.weights
    sizes = transformers_sizes(loaded)
    config = getattr(transformers, classes.config)(max_position_embeddings=w["emb.pos"].shape[0], **sizes)
    if loaded.spec.head in ("tanh", "linear"):
        backbone = getattr(transformers, classes.backbone)(config, add_pooling_layer=False)
        return _PoolerlessHead(load_state(backbone, bert_like_state(loaded, "")), loaded)
    state = bert_like_state(loaded, classes.prefix)
    state.update({theirs: w[ours] for theirs, ours in classes.head_names.items()})
    return load_state(getattr(transformers, classes.classifier)(config), state)


def from_pretrained(load: Callable[[], Any], folder: Path) -> Any:
    """``load()``, a transformers ``from_pretrained`` of ``folder``; what transformers refuses in
    the checkpoint's files (it reads config.json its own way) is a :class:`CheckpointError`."""
    try:
        return load()
    except (OSError, ValueError) as exc:  # what transformers raises for files it cannot use
        raise CheckpointError(f"{folder}: transformers cannot load it: {' '.join(str(exc).split())[:200]}") from exc


def from_pretrained_classifier(folder: Path) -> Any:
    """transformers' sequence classifier, read from the checkpoint folder by transformers itself."""
    from transformers import AutoModelForSequenceClassification

    return from_pretrained(
        lambda: AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1), folder
    )


def bert_like_reference(layout: str, classes: BertLike) -> Callable[[Path | None, LoadedModel], Any]:
    """A BERT-shaped family's reference model: transformers reads a checkpoint in its own
    ``layout`` itself; other layouts and GGUFs go through our weights (:func:`bert_like_model`)."""

    def model(folder: Path | None, loaded: LoadedModel) -> Any:
        if folder is not None and loaded.layout == layout:
            return from_pretrained_classifier(folder)
        return bert_like_model(loaded, classes)

    return model


def encoder_reference(model: Callable[[Path | None, LoadedModel], Any], name: str | None = None) -> Reference:
    """An encoder family's :class:`~rerank.converters.families.base.Reference`: ``model(folder,
    loaded)`` scores the pairs one at a time, tokenised by the checkpoint's tokenizer (as
    transformers builds it) or, without a folder, by the rebuilt one. ``name`` (default: the
    transformers version) is what ``rerank.json`` records as the reference."""

    def scores(
        loaded: LoadedModel, folder: Path | None, tokenizer: Any, pairs: list[tuple[str, str]]
    ) -> tuple[np.ndarray, str]:
        import transformers
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        reference = model(folder, loaded)
        spec = loaded.spec
        if folder is not None:
            hf_tokenizer = from_pretrained(
                lambda: AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False), folder
            )
        else:
            pad = tokenizer.id_to_token(spec.pad_id)
            hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=pad)
        logits = reference_scores(reference, hf_tokenizer, pairs, spec.max_length, spec.type_ids_input)
        return logits, f"{name or f'transformers {transformers.__version__}'} ({type(reference).__name__})"

    return scores


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
