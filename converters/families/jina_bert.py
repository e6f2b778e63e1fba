"""JinaBERT cross-encoders: jina-reranker-v1-turbo-en, jina-reranker-v1-tiny-en.

BERT with symmetric ALiBi instead of a position table, a GEGLU feed-forward (``gated_layers``
= [gate | up], GELU on the gate, no bias), post-LN, BERT pooler and a one-logit classifier. The
published config says ``model_type: bert``: the layout is recognised by its gated feed-forward
or its ``position_embedding_type: alibi``. Its tokenizer (RoBERTa BPE) emits no token-type ids.

GGUF: llama.cpp's ``jina-bert-v2``, GEGLU in one fused ``ffn_up`` (or the older split
``ffn_gate`` + ``ffn_up``); its converter drops the pooler, so the classifier in ``cls`` scores
``tanh(cls · h0 + b)``, recorded as a note.

Reference: transformers has no JinaBERT, and the checkpoint's remote code is never run:
:mod:`rerank.converters.jinabert_torch` restates the architecture in plain PyTorch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rerank.converters.families.encoder as encoder
from rerank.converters.families.base import CatalogEntry, Checkpoint, CheckpointLayout, GgufLayout
from rerank.converters.families.bert import bert_style_head
from rerank.converters.reference import encoder_reference
from rerank.converters.spec import EncoderSpec, LoadedModel

if TYPE_CHECKING:
    from rerank.converters.gguf_file import GgufFile

NAME = "jina-bert"

NAMES = encoder.EncoderNames(
    layer="encoder.layer.{i}",
    qkv=encoder.BERT_NAMES.qkv,
    o=encoder.BERT_NAMES.o,
    attn_ln=encoder.BERT_NAMES.attn_ln,
    up="mlp.gated_layers",
    up_bias=False,
    down="mlp.wo",
    ffn_ln="mlp.layernorm",
    head="pooler",
)


def _spec(max_length: int, common: dict[str, Any]) -> EncoderSpec:
    return EncoderSpec(family=NAME, max_length=max_length, positions="alibi", feed_forward="geglu", **common)


def _checkpoint_spec(ck: Checkpoint, parts: encoder.Parts) -> EncoderSpec:
    return _spec(encoder.max_positions(ck), parts.common)


def _gguf_spec(f: GgufFile, parts: encoder.Parts) -> EncoderSpec:
    return _spec(encoder.gguf_context(f), parts.common)


def _mark(config: Mapping[str, Any], names: frozenset[str]) -> bool:
    return any(".mlp.gated_layers." in name for name in names) or config.get("position_embedding_type") == "alibi"


def _reference_model(folder: Path | None, loaded: LoadedModel) -> Any:
    from rerank.converters.jinabert_torch import JinaBertReranker

    return JinaBertReranker(loaded)


FAMILY = encoder.family(
    NAME,
    checkpoints=(CheckpointLayout(NAME, lambda ck: encoder.read_checkpoint(ck, NAMES, _checkpoint_spec), mark=_mark),),
    ggufs=(
        GgufLayout(
            "jina-bert-v2", lambda f: encoder.read_gguf(f, bert_style_head(f), _gguf_spec), encoder.gguf_tokenizer
        ),
    ),
    reference=encoder_reference(_reference_model, name="rerank.converters.jinabert_torch"),
    catalog=(
        CatalogEntry(
            "jina-reranker-v1-turbo-en",
            "jinaai/jina-reranker-v1-turbo-en",
            "gpustack/jina-reranker-v1-turbo-en-GGUF",
            NAME,
            "37.8M",
            8192,
            "apache-2.0",
        ),
        CatalogEntry(
            "jina-reranker-v1-tiny-en",
            "jinaai/jina-reranker-v1-tiny-en",
            "gpustack/jina-reranker-v1-tiny-en-GGUF",
            NAME,
            "33.0M",
            8192,
            "apache-2.0",
        ),
    ),
)
