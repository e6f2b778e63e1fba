"""Qwen3-Reranker (0.6B, 4B, 8B): a decoder family, registered like the encoders.

A decoder-only LLM that scores a pair by its ``yes``/``no`` logits at the end of a fixed prompt.
Its implementation is :mod:`rerank.converters.qwen3` (spec and weight names, the prompt, the
checkpoint and GGUF readers, the graph, the reference and the catalog); this module declares
it to the registry. What it declares beyond an encoder: a pair template with a prompt (the
model card's text around query and document, and its default instruction), no fused graph
(``fusions=None``: its attention is grouped-query and causal), and the model card's token ids
for the probe pairs, which the model folder's pair encoder must reproduce exactly.

Checkpoints: ``Qwen3ForCausalLM`` (``model_type`` ``qwen3``). GGUF: ``general.architecture``
``qwen3`` (Qwen2's byte-level BPE, ``tokenizer.ggml.model`` ``gpt2``).

The implementation's modules are imported when a source is read, not when the registry is: a
serving-only install lists the catalog without onnx, torch or the gguf package.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rerank.converters.families.base import CatalogEntry, Checkpoint, CheckpointLayout, GgufLayout, ModelFamily, Read
from rerank.converters.qwen3.catalog import ENTRIES
from rerank.converters.qwen3.spec import ARCHITECTURES
from rerank.converters.qwen3.spec import FAMILY as NAME
from rerank.converters.spec import LoadedModel, Weights

if TYPE_CHECKING:
    import numpy as np
    import onnx
    from tokenizers import Tokenizer

    from rerank.converters.gguf_file import GgufFile
    from rerank.converters.qwen3.spec import Qwen3Spec
    from rerank.service.model_folder import PairTemplate


def _read_checkpoint(ck: Checkpoint) -> Read:
    from rerank.converters.qwen3.checkpoint import read_checkpoint

    return read_checkpoint(ck)


def _read_gguf(f: GgufFile) -> Read:
    from rerank.converters.qwen3.gguf import read_gguf

    return read_gguf(f)


def _gguf_tokenizer(metadata: Mapping[str, Any]) -> Tokenizer:
    from rerank.converters.qwen3.gguf import tokenizer_from_gguf

    return tokenizer_from_gguf(metadata)


def build_graph(
    spec: Qwen3Spec, weights: Weights, *, graph_name: str = "qwen3_reranker", fused_attention: bool = False
) -> onnx.ModelProto:
    """The decoder graph (:mod:`rerank.converters.qwen3.graph`) in its shared-prefix form: the
    backends read each micro-batch's common head (prompt prefix, instruction, query) once. It has
    no fused form."""
    from rerank.converters.qwen3.graph import build_graph as build

    if fused_attention:
        raise ValueError("the Qwen3-Reranker graph has no fused-attention form")
    return build(spec, weights, graph_name=graph_name, shared_prefix=True)


def graph_facts(loaded: LoadedModel) -> dict[str, int]:
    """The vocabulary's rows; RoPE tables are built for ``max_length``; the graph reads a shared
    head (:func:`build_graph`)."""
    return {
        "vocab_rows": int(loaded.weights["emb.word"].shape[0]),
        "position_rows": loaded.spec.max_length,
        "position_offset": 0,
        "shared_prefix": 1,
    }


def pair_template(tokenizer: Tokenizer, spec: Qwen3Spec) -> PairTemplate:
    """The model card's prompt around query and document, with its default instruction."""
    from rerank.converters.qwen3.prompt import pair_template as template

    return template(tokenizer, spec.pad_id)


def check(spec: Qwen3Spec, weights: Weights, where: str, error: type[Exception]) -> None:
    from rerank.converters.qwen3.spec import check_weights

    check_weights(spec, weights, where, error)


def reference(
    loaded: LoadedModel, folder: Path | None, tokenizer: Tokenizer, pairs: list[tuple[str, str]]
) -> tuple[np.ndarray, str]:
    """The model card's scoring: transformers' ``AutoModelForCausalLM`` on the checkpoint, or
    ``Qwen3Model`` with the GGUF's weights (:mod:`rerank.converters.qwen3.reference`)."""
    from rerank.converters.qwen3.reference import reference_scores

    scores, _, name = reference_scores(loaded, folder, tokenizer, pairs)
    return scores, name


def prompt_ids(
    loaded: LoadedModel, folder: Path | None, tokenizer: Tokenizer, pairs: list[tuple[str, str]]
) -> list[list[int]]:
    """Each pair's token ids as the model card builds them."""
    from rerank.converters.qwen3.reference import hf_tokenizer, model_card_ids

    return model_card_ids(hf_tokenizer(folder, tokenizer), pairs, loaded.spec.max_length)


FAMILY = ModelFamily(
    name=NAME,
    checkpoints=(CheckpointLayout(NAME, _read_checkpoint, model_types=(NAME,), architectures=ARCHITECTURES),),
    ggufs=(GgufLayout(NAME, _read_gguf, _gguf_tokenizer),),
    build_graph=build_graph,
    graph_facts=graph_facts,
    pair_template=pair_template,
    check=check,
    reference=reference,
    prompt_ids=prompt_ids,
    catalog=tuple(CatalogEntry(**entry) for entry in ENTRIES),
    fusions=None,
)
