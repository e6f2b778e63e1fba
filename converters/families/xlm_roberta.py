"""XLM-RoBERTa cross-encoders: bge-reranker-v2-m3, bce-reranker-base_v1, jina-reranker-v2.

Two checkpoint layouts: transformers' ``XLMRobertaForSequenceClassification`` names, and
jina-reranker-v2's "flash" names (the same math, q/k/v fused in ``mixer.Wqkv``). Learned
positions counted from ``pad_id + 1`` (fairseq), GELU feed-forward, RoBERTa classification head.

GGUF: llama.cpp writes XLM-R as architecture ``bert`` with the Unigram (``t5``) tokenizer, and
cuts the first ``pad_id + 1`` rows off the position table; they are restored as zero rows (only
padding would ever read them, and padding is masked).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

import rerank.converters.families.encoder as encoder
from rerank.converters.errors import GgufError
from rerank.converters.families.base import CatalogEntry, Checkpoint, CheckpointLayout, GgufLayout
from rerank.converters.reference import BertLike, bert_like_reference, encoder_reference
from rerank.converters.spec import EncoderSpec

if TYPE_CHECKING:
    from rerank.converters.gguf_file import GgufFile

NAME = "xlm-roberta"

FLASH_NAMES = encoder.EncoderNames(
    layer="encoder.layers.{i}",
    qkv=("mixer.Wqkv",),
    o="mixer.out_proj",
    attn_ln="norm1",
    up="mlp.fc1",
    down="mlp.fc2",
    ffn_ln="norm2",
    emb_ln="emb_ln",
    head="roberta",
)
"""jina-reranker-v2's flash-attention XLM-R."""


def _spec(max_positions: int, pad_id: int, common: dict[str, Any]) -> EncoderSpec:
    return EncoderSpec(
        family=NAME,
        max_length=max_positions - pad_id - 1,
        positions="learned",
        feed_forward="gelu",
        position_offset=pad_id + 1,
        positions_from_pad=True,
        **common,
    )


def _checkpoint_spec(ck: Checkpoint, parts: encoder.Parts) -> EncoderSpec:
    return _spec(encoder.learned_positions(ck, parts), parts.sizes.pad_id, parts.common)


def _gguf_spec(f: GgufFile, parts: encoder.Parts) -> EncoderSpec:
    pad_id, table = parts.sizes.pad_id, encoder.gguf_tensor(f, parts, "position_embd.weight")
    if table.ndim != 2:
        raise GgufError(f"{f.path}: position_embd.weight has {table.ndim} dimensions; expected 2")
    parts.weights["emb.pos"] = np.concatenate([np.zeros((pad_id + 1, table.shape[1]), np.float32), table], 0)
    return _spec(encoder.gguf_context(f) + pad_id + 1, pad_id, parts.common)


def _flash(config: Mapping[str, Any], names: frozenset[str]) -> bool:
    return any(".mixer.Wqkv." in name for name in names)


XLMR = BertLike(
    config="XLMRobertaConfig",
    classifier="XLMRobertaForSequenceClassification",
    backbone="XLMRobertaModel",
    prefix="roberta.",
    head_names={
        "classifier.dense.weight": "head.dense.w",
        "classifier.dense.bias": "head.dense.b",
        "classifier.out_proj.weight": "head.out.w",
        "classifier.out_proj.bias": "head.out.b",
    },
)


FAMILY = encoder.family(
    NAME,
    checkpoints=(
        CheckpointLayout(
            NAME,
            lambda ck: encoder.read_checkpoint(ck, encoder.XLMR_NAMES, _checkpoint_spec),
            model_types=("xlm-roberta", "roberta", "camembert"),
            architectures=("XLMRobertaForSequenceClassification",),
        ),
        CheckpointLayout("jina-v2", lambda ck: encoder.read_checkpoint(ck, FLASH_NAMES, _checkpoint_spec), mark=_flash),
    ),
    ggufs=(
        GgufLayout(
            "bert",
            lambda f: encoder.read_gguf(f, "roberta", _gguf_spec),
            encoder.gguf_tokenizer,
            tokenizer_models=("t5",),
        ),
    ),
    reference=encoder_reference(bert_like_reference(NAME, XLMR)),
    catalog=(
        CatalogEntry(
            "bge-reranker-v2-m3",
            "BAAI/bge-reranker-v2-m3",
            "gpustack/bge-reranker-v2-m3-GGUF",
            NAME,
            "568M",
            8192,
            "apache-2.0",
        ),
        CatalogEntry(
            "bce-reranker-base_v1",
            "maidalun1020/bce-reranker-base_v1",
            "gpustack/bce-reranker-base_v1-GGUF",
            NAME,
            "279M",
            512,
            "apache-2.0",
        ),
        CatalogEntry(
            "jina-reranker-v2-base-multilingual",
            "jinaai/jina-reranker-v2-base-multilingual",
            "gpustack/jina-reranker-v2-base-multilingual-GGUF",
            NAME,
            "278M",
            1024,
            "cc-by-nc-4.0",
        ),
    ),
)
