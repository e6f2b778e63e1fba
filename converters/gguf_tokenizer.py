"""Rebuilds a reranker's Hugging Face fast tokenizer from the ``tokenizer.ggml.*`` metadata of a GGUF.

Three tokenizer models are supported, each rebuilt as the pipeline transformers gives the
published checkpoints:

* ``t5``: XLM-R's SentencePiece Unigram (bge-reranker-v2-m3, bce, jina-v2, gte);
* ``bert``: WordPiece (BERT cross-encoders); llama.cpp stores word-initial pieces with a leading
  ``▁`` and continuation pieces without their ``##``;
* ``gpt2``: byte-level BPE with the RoBERTa template (jina-reranker-v1).

Tolerated quirks of published files: a ``precompiled_charsmap`` stored as a base64 string, a
missing ``add_sep_token`` (the template follows the model kind, not that flag),
``add_space_prefix=false`` on XLM-R (it always prepends ``▁``), and the ``[PAD<n>]`` placeholder
that llama.cpp writes where ``sentencepiece.bpe.model`` lacks XLM-R's trailing ``<mask>``.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from rerank.converters.errors import GgufError

__all__ = ["tokenizer_from_gguf"]

_UNKNOWN, _CONTROL, _BYTE = 2, 3, 6
_XLMR_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
_PLACEHOLDER = re.compile(r"\[PAD\d+\]")


def tokenizer_from_gguf(metadata: dict[str, Any]) -> Tokenizer:
    """Rebuilds the Hugging Face fast tokenizer of a reranker from GGUF metadata (tokenizer.ggml.*).

    ``metadata`` is :attr:`rerank.converters.gguf_file.GgufFile.metadata`. Control and unknown tokens
    (types 3 and 2) become special added tokens. Pairs are templated like the original:
    ``<s> A </s></s> B </s>``, all type 0, for XLM-R/RoBERTa; ``[CLS] A [SEP] B [SEP]`` with types
    0/1 for BERT.
    """
    kind = str(metadata.get("tokenizer.ggml.model", ""))
    if "tokenizer.ggml.tokens" not in metadata:
        raise GgufError("the GGUF has no tokenizer (no tokenizer.ggml.tokens)")
    tokens = list(metadata["tokenizer.ggml.tokens"])
    types = np.asarray(metadata.get("tokenizer.ggml.token_type", np.ones(len(tokens))), dtype=np.int64)
    mask_id = metadata.get("tokenizer.ggml.mask_token_id")
    if kind == "t5":
        scores = np.asarray(metadata["tokenizer.ggml.scores"], dtype=np.float64)
        if tokens[:4] == _XLMR_SPECIALS and _PLACEHOLDER.fullmatch(tokens[-1]):
            mask_id = len(tokens) - 1
            tokens[mask_id], scores[mask_id], types[mask_id] = "<mask>", 0.0, _CONTROL
        tokenizer = _unigram(metadata, tokens, scores, types)
    elif kind == "bert":
        tokenizer = _wordpiece(metadata, tokens, types)
    elif kind == "gpt2":
        tokenizer = _byte_level_bpe(metadata, tokens)
    else:
        raise GgufError(f"unsupported tokenizer.ggml.model {kind!r} (expected t5, bert or gpt2)")

    # As in the original, the unknown token is special too. RoBERTa-style tokenizers strip the
    # space before <mask>; BERT's [MASK] keeps it.
    tokenizer.add_special_tokens(
        [
            AddedToken(tokens[i], special=True, normalized=False, lstrip=kind != "bert" and i == mask_id)
            for i in np.flatnonzero((types == _CONTROL) | (types == _UNKNOWN))
        ]
    )
    tokenizer.post_processor = _template(metadata, tokens, bert=kind == "bert")
    return tokenizer


def _id(metadata: dict[str, Any], *names: str) -> int:
    """The first of the ``tokenizer.ggml.<name>_token_id`` keys that is present."""
    for name in names:
        value = metadata.get(f"tokenizer.ggml.{name}_token_id")
        if value is not None:
            return int(value)
    raise GgufError(f"GGUF metadata has none of the {names} token ids")


def _charsmap(value: Any) -> bytes:
    """``precompiled_charsmap`` as bytes: a u8 array, or a base64 string (llama-box conversions)."""
    if isinstance(value, str):
        return base64.b64decode(value)
    return np.asarray(value).astype(np.uint8).tobytes()


def _unigram(metadata: dict[str, Any], tokens: list[str], scores: np.ndarray, types: np.ndarray) -> Tokenizer:
    """XLM-R: Unigram after the charsmap, split on whitespace, ``▁`` always prepended (whatever
    ``add_space_prefix`` says: published files get it wrong).

    The whitespace split is what SentencePiece (``remove_extra_whitespaces``), llama.cpp and
    transformers 5 do: runs of spaces collapse and leading or trailing whitespace is dropped.
    Older ``tokenizer.json`` files instead collapse with a regex and keep a trailing ``▁``.
    """
    tokenizer = Tokenizer(
        models.Unigram(
            list(zip(tokens, scores.tolist(), strict=False)),
            unk_id=_id(metadata, "unknown"),
            byte_fallback=bool((types == _BYTE).any()),
        )
    )
    charsmap = metadata.get("tokenizer.ggml.precompiled_charsmap")
    if charsmap is not None and len(charsmap):
        tokenizer.normalizer = normalizers.Precompiled(_charsmap(charsmap))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tokenizer


def _wordpiece(metadata: dict[str, Any], tokens: list[str], types: np.ndarray) -> Tokenizer:
    """BERT: undo llama.cpp's piece spelling (``▁word`` -> ``word``, ``piece`` -> ``##piece``)."""
    vocab: dict[str, int] = {}
    for i, (token, token_type) in enumerate(zip(tokens, types.tolist(), strict=False)):
        if token_type != _CONTROL:
            token = token[1:] if token.startswith("▁") else f"##{token}"
        vocab.setdefault(token, i)
    lowercase = metadata.get("tokenizer.ggml.normalizer.lowercase")
    if lowercase is None:  # older files: uncased exactly when no piece has an upper-case letter
        lowercase = not any(t != t.lower() for t, kind in zip(tokens, types.tolist(), strict=False) if kind != _CONTROL)
    tokenizer = Tokenizer(
        models.WordPiece(vocab, unk_token=tokens[_id(metadata, "unknown")], continuing_subword_prefix="##")
    )
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=bool(lowercase))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def _byte_level_bpe(metadata: dict[str, Any], tokens: list[str]) -> Tokenizer:
    """RoBERTa/GPT-2 byte-level BPE; merges are stored as ``"left right"``."""
    merges = [tuple(merge.split(" ", 1)) for merge in metadata["tokenizer.ggml.merges"]]
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab, merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _template(metadata: dict[str, Any], tokens: list[str], *, bert: bool) -> processors.TemplateProcessing:
    """BERT: ``[CLS] A [SEP] B [SEP]``, B typed 1. Otherwise RoBERTa: ``<s> A </s> </s> B </s>``."""
    cls_id, sep_id = _id(metadata, "cls", "bos"), _id(metadata, "seperator", "eos")
    cls, sep = tokens[cls_id], tokens[sep_id]
    second = f"$B:1 {sep}:1" if bert else f"{sep} $B {sep}"
    return processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} {second}",
        special_tokens=[(cls, cls_id), (sep, sep_id)],
    )
