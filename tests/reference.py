"""Independent reference scores for the tests: one per family, straight from the checkpoint.

Deliberately shares no code with the converter or the service: each reference reads the
checkpoint's own files under their published names, and every pair is tokenised by the Hugging
Face tokenizer (``truncation="only_second"``) and scored alone, so padding cannot hide anything.

=========  ====================================================================================
kind       reference
=========  ====================================================================================
xlmr       transformers' ``AutoModelForSequenceClassification``, loaded by transformers itself
bert       the same (or, ``pooler=False``, ``BertModel`` + classifier on h0: llama.cpp's head)
jina-v2    transformers' XLM-R, given the flash names renamed back (jina-v2 is XLM-R math)
jina-v1    :class:`tests.jinabert_numpy.JinaBertNumpy`: numpy JinaBERT from the published
           description (transformers has none, and the checkpoint's own code is never run)
gte        :func:`gte_remote_code_logit`: Alibaba's "new" forward restated in plain torch from
           its remote code, with the fixed-NTK RoPE computed as that code computes it
=========  ====================================================================================

The converter verifies its graphs against transformers (and its own PyTorch JinaBERT,
``converters/jinabert_torch.py``) fed by its own readers; these references are the second,
independent opinion, above all on the layout translations (jina-v2's flash names, GTE's RoPE).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.jinabert_numpy import JinaBertNumpy

Encoded = dict[str, torch.Tensor]
"""One tokenised pair: ``input_ids``, ``attention_mask`` and maybe ``token_type_ids``, [1, length]."""


def reference_scores(
    kind: str,
    folder: Path,
    pairs: Sequence[tuple[str, str]],
    *,
    max_length: int | None = None,
    pooler: bool = True,
    type_ids: bool = True,
) -> np.ndarray:
    """The reference logit of each (query, document) pair for the fixture ``kind`` in ``folder``.

    ``max_length``: the truncation limit (default: the tokenizer's ``model_max_length``).
    ``pooler=False``: the head llama.cpp computes for a GGUF whose pooler its converter dropped
    (bert: classifier(h0); jina-v1: tanh(classifier(h0))). ``type_ids=False``: every token gets
    token type 0, as llama.cpp feeds a BERT model.
    """
    score = _scorer(kind, str(folder), pooler)
    tokenizer = _tokenizer(str(folder))
    limit = max_length or tokenizer.model_max_length
    out = []
    with torch.inference_mode():
        for query, document in pairs:
            # List form, as sentence-transformers' CrossEncoder calls it: an empty document is then
            # still a pair (a bare string pair with "" collapses to a single sequence).
            encoded = tokenizer([query], [document], truncation="only_second", max_length=limit, return_tensors="pt")
            if not type_ids:
                encoded.pop("token_type_ids", None)
            out.append(score(dict(encoded)))
    return np.asarray(out, dtype=np.float64)


def transformers_scores(folder: Path, query: str, documents: list[str], max_length: int | None = None) -> np.ndarray:
    """transformers' logits for (query, document) pairs of an XLM-R or BERT checkpoint."""
    return reference_scores("xlmr", folder, [(query, d) for d in documents], max_length=max_length)


@functools.lru_cache(maxsize=16)
def _tokenizer(folder: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)


@functools.lru_cache(maxsize=16)
def _scorer(kind: str, folder: str, pooler: bool) -> Callable[[Encoded], float]:
    path = Path(folder)
    if kind == "jina-v1":
        jina = JinaBertNumpy(path)
        return lambda enc: jina.score(enc["input_ids"][0].tolist(), head="pooler" if pooler else "tanh")
    if kind == "gte":
        return functools.partial(gte_remote_code_logit, _float_tensors(path), _config(path))
    if kind == "bert" and not pooler:
        return _bert_without_pooler(path)
    if kind in ("xlmr", "bert"):
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1).float().eval()
    elif kind == "jina-v2":
        model = _xlmr_from_flash(path)
    else:
        raise ValueError(f"no reference for {kind!r} (pooler={pooler})")
    return lambda enc: float(model(**enc).logits.reshape(-1)[0])


def _config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def _float_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}


def _bert_without_pooler(folder: Path) -> Callable[[Encoded], float]:
    """transformers' ``BertModel`` without its pooler, and the classifier on h0."""
    from transformers import BertModel

    backbone = BertModel.from_pretrained(str(folder), add_pooling_layer=False).eval()
    tensors = _float_tensors(folder)
    weight, bias = tensors["classifier.weight"][0], tensors["classifier.bias"][0]
    return lambda enc: float(backbone(**enc).last_hidden_state[0, 0] @ weight + bias)


def _xlmr_from_flash(folder: Path) -> torch.nn.Module:
    """jina-reranker-v2's flash names renamed to transformers' XLM-R, loaded there."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    raw = _config(folder)
    keys = (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
        "layer_norm_eps",
        "type_vocab_size",
        "pad_token_id",
    )
    config = XLMRobertaConfig(num_labels=1, **{k: raw[k] for k in keys})
    H = config.hidden_size
    renames = (
        ("roberta.emb_ln", "roberta.embeddings.LayerNorm"),
        ("encoder.layers.", "encoder.layer."),
        ("mixer.out_proj", "attention.output.dense"),
        ("norm1", "attention.output.LayerNorm"),
        ("mlp.fc1", "intermediate.dense"),
        ("mlp.fc2", "output.dense"),
        ("norm2", "output.LayerNorm"),
    )
    state = {}
    for key, value in _float_tensors(folder).items():
        for old, new in renames:
            key = key.replace(old, new)
        if "mixer.Wqkv" in key:
            for j, name in enumerate(("query", "key", "value")):
                state[key.replace("mixer.Wqkv", f"attention.self.{name}")] = value[j * H : (j + 1) * H]
        else:
            state[key] = value
    model = XLMRobertaForSequenceClassification(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("position_ids" in m for m in missing), (missing, unexpected)
    return model.eval()


def gte_remote_code_logit(
    w: dict[str, torch.Tensor], cfg: dict[str, Any], enc: Encoded, rope_factor: float | None = None
) -> float:
    """Alibaba's "new" forward (fixed-NTK RoPE, [up | gate] gated GELU, post-LN, pooler) for one
    unpadded pair, in plain torch, from the checkpoint's own names and ``config.json``.

    The remote code's NTK scaling: ``inv_freq = (θ·f)^(-2i/d) / f^(2/d)``. ``rope_factor``
    overrides ``f`` (1.0: no scaling), to show that the fixture is sensitive to it.
    """
    hidden, heads, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    dim = hidden // heads

    def ln(x: torch.Tensor, name: str) -> torch.Tensor:
        return torch.nn.functional.layer_norm(x, (hidden,), w[f"{name}.weight"], w[f"{name}.bias"], eps)

    def lin(x: torch.Tensor, name: str) -> torch.Tensor:
        return torch.nn.functional.linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))

    def rotate(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x[..., dim // 2 :], x[..., : dim // 2]], dim=-1)

    factor = cfg["rope_scaling"]["factor"] if rope_factor is None else rope_factor
    inv_freq = (cfg["rope_theta"] * factor) ** (-torch.arange(0, dim, 2).float() / dim) / factor ** (2 / dim)
    angles = torch.outer(torch.arange(enc["input_ids"].shape[1]).float(), inv_freq).repeat(1, 2)
    cos, sin = angles.cos(), angles.sin()
    x = ln(
        w["new.embeddings.word_embeddings.weight"][enc["input_ids"]]
        + w["new.embeddings.token_type_embeddings.weight"][0],
        "new.embeddings.LayerNorm",
    )
    for i in range(cfg["num_hidden_layers"]):
        p = f"new.encoder.layer.{i}"
        q, k, v = (
            t.unflatten(-1, (heads, dim)).transpose(1, 2)
            for t in lin(x, f"{p}.attention.qkv_proj").split(hidden, dim=-1)
        )
        q, k = q * cos + rotate(q) * sin, k * cos + rotate(k) * sin
        ctx = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        x = ln(x + lin(ctx.transpose(1, 2).flatten(2), f"{p}.attention.o_proj"), f"{p}.attn_ln")
        up, gate = lin(x, f"{p}.mlp.up_gate_proj").chunk(2, dim=-1)
        x = ln(x + lin(torch.nn.functional.gelu(gate) * up, f"{p}.mlp.down_proj"), f"{p}.mlp_ln")
    return float(lin(torch.tanh(lin(x[:, 0], "new.pooler.dense")), "classifier")[0, 0])
