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
import binascii
import re
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from rerank.converters.charsmap import charsmap_problem
from rerank.converters.errors import GgufError
from rerank.converters.fields import MAX_VOCAB

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

    The metadata is untrusted: every value is checked (types, lengths that agree, ids inside the
    vocabulary, a charsmap whose every lookup stays in bounds) and what the tokenizers library
    still refuses becomes a :class:`GgufError` too.
    """
    kind = metadata.get("tokenizer.ggml.model", "")
    if not isinstance(kind, str):
        raise GgufError(f"tokenizer.ggml.model is {type(kind).__name__}, not a name")
    if "tokenizer.ggml.tokens" not in metadata:
        raise GgufError("the GGUF has no tokenizer (no tokenizer.ggml.tokens)")
    tokens = _strings(metadata, "tokens")
    if not 0 < len(tokens) <= MAX_VOCAB:
        raise GgufError(f"tokenizer.ggml.tokens has {len(tokens)} tokens; expected 1 to {MAX_VOCAB}")
    types = _numbers(metadata, "token_type", len(tokens), np.int64) if "tokenizer.ggml.token_type" in metadata else None
    types = np.ones(len(tokens), dtype=np.int64) if types is None else types
    mask_id = metadata.get("tokenizer.ggml.mask_token_id")
    if mask_id is not None:
        mask_id = _id(metadata, "mask", vocab=len(tokens))
    return _built(lambda: _tokenizer(metadata, kind, tokens, types, mask_id))


T = TypeVar("T")


def _built(build: Callable[[], T]) -> T:
    """``build()``, with what the tokenizers library refuses (a plain ``Exception``) as a :class:`GgufError`."""
    try:
        return build()
    except Exception as exc:  # the library raises plain Exception; anything else is a bug
        if type(exc) is not Exception:
            raise
        raise GgufError(f"the tokenizers library cannot rebuild the GGUF's tokenizer: {str(exc)[:160]}") from exc


def _tokenizer(
    metadata: dict[str, Any], kind: str, tokens: list[str], types: np.ndarray, mask_id: int | None
) -> Tokenizer:
    if kind == "t5":
        if "tokenizer.ggml.scores" not in metadata:
            raise GgufError("the GGUF's Unigram tokenizer has no tokenizer.ggml.scores")
        scores = _numbers(metadata, "scores", len(tokens), np.float64)
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


def _id(metadata: dict[str, Any], *names: str, vocab: int) -> int:
    """The first of the ``tokenizer.ggml.<name>_token_id`` keys that is present, inside the vocabulary."""
    for name in names:
        key = f"tokenizer.ggml.{name}_token_id"
        value = metadata.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab:
                raise GgufError(f"{key} is {value!r}; expected a token id below {vocab}")
            return value
    raise GgufError(f"GGUF metadata has none of the {names} token ids")


def _strings(metadata: dict[str, Any], name: str) -> list[str]:
    """An array of strings, each valid UTF-8 (the GGUF reader keeps invalid bytes as surrogates)."""
    value = metadata[f"tokenizer.ggml.{name}"]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise GgufError(f"tokenizer.ggml.{name} is not an array of strings")
    try:
        "".join(value).encode("utf-8")
    except UnicodeEncodeError:
        bad = next(i for i, item in enumerate(value) if not _utf8(item))
        raise GgufError(f"tokenizer.ggml.{name}[{bad}] is not UTF-8") from None
    return list(value)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _numbers(metadata: dict[str, Any], name: str, count: int, dtype: type) -> np.ndarray:
    """A numeric array of ``count`` finite values."""
    value = metadata[f"tokenizer.ggml.{name}"]
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf" or value.shape != (count,):
        shown = f"{value.dtype} x {value.size}" if isinstance(value, np.ndarray) else type(value).__name__
        raise GgufError(f"tokenizer.ggml.{name} is {shown}; expected {count} numbers, one per token")
    if not np.isfinite(value).all():
        raise GgufError(f"tokenizer.ggml.{name} holds values that are not finite")
    return value.astype(dtype)


def _charsmap(value: Any) -> bytes:
    """``precompiled_charsmap`` as bytes: a u8 array, or a base64 string (llama-box conversions),
    checked to be safe for the tokenizers library to read."""
    if isinstance(value, str):
        try:
            data = base64.b64decode(value)
        except (binascii.Error, ValueError) as exc:
            raise GgufError(f"tokenizer.ggml.precompiled_charsmap is not base64 ({exc})") from None
    elif isinstance(value, np.ndarray) and value.ndim == 1 and (value.dtype.kind in "iu" or not value.size):
        data = value.astype(np.uint8).tobytes()
    else:
        raise GgufError(f"tokenizer.ggml.precompiled_charsmap is {type(value).__name__}; expected bytes")
    problem = charsmap_problem(data) if data else None
    if problem:
        raise GgufError(f"tokenizer.ggml.precompiled_charsmap is not a usable table: {problem}")
    return data


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
            unk_id=_id(metadata, "unknown", vocab=len(tokens)),
            byte_fallback=bool((types == _BYTE).any()),
        )
    )
    charsmap = metadata.get("tokenizer.ggml.precompiled_charsmap")
    if charsmap is not None and (data := _charsmap(charsmap)):
        tokenizer.normalizer = normalizers.Precompiled(data)
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
    if lowercase is not None and not isinstance(lowercase, bool):
        raise GgufError(f"tokenizer.ggml.normalizer.lowercase is {type(lowercase).__name__}, not a boolean")
    if lowercase is None:  # older files: uncased exactly when no piece has an upper-case letter
        lowercase = not any(t != t.lower() for t, kind in zip(tokens, types.tolist(), strict=False) if kind != _CONTROL)
    tokenizer = Tokenizer(
        models.WordPiece(
            vocab, unk_token=tokens[_id(metadata, "unknown", vocab=len(tokens))], continuing_subword_prefix="##"
        )
    )
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=bool(lowercase))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def _byte_level_bpe(metadata: dict[str, Any], tokens: list[str]) -> Tokenizer:
    """RoBERTa/GPT-2 byte-level BPE; merges are stored as ``"left right"``."""
    if "tokenizer.ggml.merges" not in metadata:
        raise GgufError("the GGUF's BPE tokenizer has no tokenizer.ggml.merges")
    merges = []
    for merge in _strings(metadata, "merges"):
        left, space, right = merge.partition(" ")
        if not (left and space and right):
            raise GgufError(f"tokenizer.ggml.merges holds {merge[:40]!r}, not a pair 'left right'")
        merges.append((left, right))
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab, merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _template(metadata: dict[str, Any], tokens: list[str], *, bert: bool) -> processors.TemplateProcessing:
    """BERT: ``[CLS] A [SEP] B [SEP]``, B typed 1. Otherwise RoBERTa: ``<s> A </s> </s> B </s>``."""
    cls_id = _id(metadata, "cls", "bos", vocab=len(tokens))
    sep_id = _id(metadata, "seperator", "eos", vocab=len(tokens))
    cls, sep = tokens[cls_id], tokens[sep_id]
    second = f"$B:1 {sep}:1" if bert else f"{sep} $B {sep}"
    return processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} {second}",
        special_tokens=[(cls, cls_id), (sep, sep_id)],
    )
