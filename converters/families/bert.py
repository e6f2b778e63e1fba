"""BERT cross-encoders (``BertForSequenceClassification``, e.g. the ms-marco-MiniLM family).

Learned positions from 0, token types (the document typed 1), GELU feed-forward, BERT pooler
and a one-logit classifier.

GGUF: llama.cpp's architecture ``bert`` with any tokenizer but XLM-R's Unigram (WordPiece
``bert``, as a rule). Its converter drops the pooler and puts the classifier in ``cls.output``:
such a file scores ``classifier(h0)`` (llama.cpp's RANK pooling), recorded as a note.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import rerank.converters.families.encoder as encoder
from rerank.converters.families.base import Checkpoint, CheckpointLayout, GgufLayout
from rerank.converters.reference import BertLike, bert_like_reference, encoder_reference
from rerank.converters.spec import EncoderSpec

if TYPE_CHECKING:
    from rerank.converters.gguf_file import GgufFile

NAME = "bert"

TYPE_IDS_USED = (
    "document tokens get token type 1 from the file's token-type table, as the original BERT model does; "
    "llama.cpp feeds type 0 to every token"
)


def _spec(max_length: int, common: dict[str, Any]) -> EncoderSpec:
    return EncoderSpec(
        family=NAME,
        max_length=max_length,
        positions="learned",
        feed_forward="gelu",
        type_ids_input=common["type_vocab"] > 1,
        **common,
    )


def _checkpoint_spec(ck: Checkpoint, parts: encoder.Parts) -> EncoderSpec:
    return _spec(encoder.learned_positions(ck, parts), parts.common)


def _gguf_spec(f: GgufFile, parts: encoder.Parts) -> EncoderSpec:
    parts.weights["emb.pos"] = encoder.gguf_tensor(f, parts, "position_embd.weight")
    spec = _spec(encoder.gguf_context(f), parts.common)
    if spec.type_ids_input:
        parts.notes.append(TYPE_IDS_USED)
    return spec


BERT = BertLike(
    config="BertConfig",
    classifier="BertForSequenceClassification",
    backbone="BertModel",
    prefix="bert.",
    head_names={
        "bert.pooler.dense.weight": "head.dense.w",
        "bert.pooler.dense.bias": "head.dense.b",
        "classifier.weight": "head.out.w",
        "classifier.bias": "head.out.b",
    },
)


def bert_style_head(f: GgufFile) -> str:
    """The head name of a llama.cpp BERT-style file that kept its pooler: BERT's with a WordPiece
    tokenizer, RoBERTa's otherwise (the same math)."""
    return "pooler" if encoder.tokenizer_model(f) == "bert" else "roberta"


FAMILY = encoder.family(
    NAME,
    checkpoints=(
        CheckpointLayout(
            NAME,
            lambda ck: encoder.read_checkpoint(ck, encoder.BERT_NAMES, _checkpoint_spec),
            model_types=("bert",),
            architectures=("BertForSequenceClassification",),
        ),
    ),
    ggufs=(GgufLayout("bert", lambda f: encoder.read_gguf(f, bert_style_head(f), _gguf_spec), encoder.gguf_tokenizer),),
    reference=encoder_reference(bert_like_reference(NAME, BERT)),
)
