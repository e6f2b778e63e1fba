"""Reads a Qwen3-Reranker GGUF (``general.architecture = qwen3``) into canonical weights and a tokenizer.

llama.cpp's converter recognises the reranker (by its README or name) and writes, besides the
usual Qwen3 tensors, the LM head's ``yes`` and ``no`` rows as ``cls.output`` (labels in
``qwen3.classifier.output_labels``, ``["yes", "no"]``), dropping the rest of an untied head; a
file converted as a plain LLM has the whole head instead (``output.weight``, or the embeddings
when tied). Either way the score is ``logit(yes) - logit(no)``, read from whichever the file has.

The tokenizer is Qwen2's byte-level BPE (``tokenizer.ggml.model = gpt2``, ``pre = qwen2``),
rebuilt as transformers builds Qwen2's: NFC, Qwen2's split regex, byte-level, BPE with the file's
merges; control and user-defined tokens become added tokens. The prompt is the model card's
whatever the file's ``rerank`` chat template says (llama.cpp's has the default instruction
baked in).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from rerank.converters.errors import GgufError
from rerank.converters.families.base import Read
from rerank.converters.fields import MAX_HEADS, MAX_INTERMEDIATE, MAX_LAYERS, MAX_VOCAB, Fields
from rerank.converters.gguf_file import GgufFile
from rerank.converters.qwen3.prompt import MODEL_CARD_MAX_LENGTH, NO, YES
from rerank.converters.qwen3.spec import Qwen3Spec
from rerank.converters.spec import Weights

QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
"""Qwen2's pre-tokenizer split, as transformers' ``Qwen2Tokenizer`` writes it."""
_NORMAL, _CONTROL, _USER_DEFINED, _UNUSED = 1, 3, 4, 5
HEAD_FROM_LM = "the GGUF has no reranker head (cls.output): the yes/no rows were read from its LM head ({where})"


def _tensor(t: Weights, name: str, where: str) -> np.ndarray:
    try:
        return t[name]
    except KeyError:
        raise GgufError(f"{where}: the GGUF has no tensor {name!r}") from None


def _head(f: GgufFile, t: Weights, yes: int, no: int, hidden: int, notes: list[str]) -> np.ndarray:
    """The (no, yes) rows of the LM head: from ``cls.output`` by its labels, else the LM head."""
    where = str(f.path)
    if "cls.output.weight" in t:
        rows = t["cls.output.weight"]
        labels = f.key("classifier.output_labels") or ["yes", "no"]
        labels = [str(label) for label in labels] if isinstance(labels, list) else [str(labels)]
        if rows.size != 2 * hidden or sorted(labels) != ["no", "yes"]:
            raise GgufError(f"{where}: cls.output has labels {labels} ({list(rows.shape)}); expected yes and no rows")
        rows = rows.reshape(2, hidden)
        return np.stack([rows[labels.index(NO)], rows[labels.index(YES)]])
    name = "output.weight" if "output.weight" in t else "token_embd.weight"
    notes.append(HEAD_FROM_LM.format(where="output.weight" if name == "output.weight" else "token_embd.weight, tied"))
    table = _tensor(t, name, where)
    if table.ndim != 2 or table.shape[0] <= max(yes, no):
        raise GgufError(f"{where}: {name} has shape {list(table.shape)}; it holds no rows for 'yes' and 'no'")
    return table[[no, yes]].copy()


def read_gguf(f: GgufFile) -> Read:
    """The opened GGUF ``f`` as a spec and dequantised float32 weights (sizes checked)."""
    where = str(f.path)
    try:
        yes, no = answer_ids(f.metadata)
    except GgufError as exc:
        raise GgufError(f"{where}: {exc}") from exc
    meta = Fields(f.metadata, where, GgufError, f"{f.architecture}.")
    layers = meta.integer("block_count", maximum=MAX_LAYERS)
    hidden = meta.integer("embedding_length")
    heads = meta.integer("attention.head_count", maximum=MAX_HEADS)
    kv_heads = meta.integer("attention.head_count_kv", heads, maximum=heads)
    head_dim = meta.integer("attention.key_length", max(1, hidden // heads))
    t = f.tensors()
    notes: list[str] = []
    w: Weights = {"emb.word": _tensor(t, "token_embd.weight", where), "norm": _tensor(t, "output_norm.weight", where)}
    for i in range(layers):
        b, o = f"blk.{i}.", f"L{i}."
        w[o + "attn_norm"] = _tensor(t, b + "attn_norm.weight", where)
        w[o + "ffn_norm"] = _tensor(t, b + "ffn_norm.weight", where)
        for ours, theirs in (("q", "attn_q"), ("k", "attn_k"), ("v", "attn_v"), ("o", "attn_output")):
            w[f"{o}{ours}.w"] = _tensor(t, f"{b}{theirs}.weight", where)
            if f"{b}{theirs}.bias" in t:
                w[f"{o}{ours}.b"] = t[f"{b}{theirs}.bias"]
        w[o + "q_norm"] = _tensor(t, b + "attn_q_norm.weight", where)
        w[o + "k_norm"] = _tensor(t, b + "attn_k_norm.weight", where)
        for name in ("gate", "up", "down"):
            w[f"{o}{name}.w"] = _tensor(t, f"{b}ffn_{name}.weight", where)
    w["head.w"] = _head(f, t, yes, no, hidden, notes)
    tokens = Fields(f.metadata, where, GgufError)
    eos = tokens.integer("tokenizer.ggml.eos_token_id", 0, minimum=0, maximum=MAX_VOCAB)
    pad = tokens.integer("tokenizer.ggml.padding_token_id", eos, minimum=0, maximum=MAX_VOCAB)
    spec = Qwen3Spec(
        num_layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=meta.integer("feed_forward_length", maximum=MAX_INTERMEDIATE),
        rms_norm_eps=meta.number("attention.layer_norm_rms_epsilon", 1e-6, high=1.0),
        rope_base=meta.number("rope.freq_base", 10000.0),
        max_length=min(MODEL_CARD_MAX_LENGTH, meta.integer("context_length", MODEL_CARD_MAX_LENGTH, maximum=1 << 24)),
        yes_id=yes,
        no_id=no,
        pad_id=pad,
        attention_bias="blk.0.attn_q.bias" in t,
    )
    return Read(spec, w, notes)


def _vocabulary(metadata: Mapping[str, Any]) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """The file's tokens, their types, and the BPE vocabulary (every token but the unused ones)."""
    kind, pre = metadata.get("tokenizer.ggml.model"), metadata.get("tokenizer.ggml.pre")
    if kind != "gpt2" or pre != "qwen2":
        raise GgufError(f"tokenizer {kind!r} with pre-tokenizer {pre!r}: a Qwen3-Reranker's is 'gpt2' with 'qwen2'")
    tokens = [str(token) for token in metadata.get("tokenizer.ggml.tokens") or ()]
    types = np.asarray(metadata.get("tokenizer.ggml.token_type", np.full(len(tokens), _NORMAL)), dtype=np.int64)
    if types.shape != (len(tokens),):
        raise GgufError(f"{types.size} token types for {len(tokens)} tokens")
    # Unused ids (llama.cpp's "[PAD<n>]" for embedding rows past the tokenizer) are no tokens at
    # all. Added tokens stay in the model's vocabulary, so that each keeps its id when it is added
    # (no merge ever builds them).
    return tokens, types, {tok: i for i, tok in enumerate(tokens) if types[i] != _UNUSED}


def answer_ids(metadata: Mapping[str, Any]) -> tuple[int, int]:
    """The ids of the tokens ``yes`` and ``no`` in the file's vocabulary."""
    vocab = _vocabulary(metadata)[2]
    if YES not in vocab or NO not in vocab:
        raise GgufError("the vocabulary has no single token 'yes' or 'no': not a Qwen3-Reranker")
    return vocab[YES], vocab[NO]


def tokenizer_from_gguf(metadata: Mapping[str, Any]) -> Tokenizer:
    """Qwen2's tokenizer from ``tokenizer.ggml.*``: byte-level BPE as transformers builds it."""
    tokens, types, vocab = _vocabulary(metadata)
    merges = [tuple(str(m).split(" ", 1)) for m in metadata.get("tokenizer.ggml.merges") or ()]
    tokenizer = qwen2_tokenizer(vocab, merges)  # type: ignore[arg-type]  # each merge splits in two
    added = np.flatnonzero((types == _CONTROL) | (types == _USER_DEFINED)).tolist()
    tokenizer.add_tokens([AddedToken(tokens[i], special=bool(types[i] == _CONTROL), normalized=False) for i in added])
    return tokenizer


def qwen2_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """Qwen2's tokenizer pipeline, as transformers' ``Qwen2Tokenizer`` builds it, over a
    byte-level BPE ``vocab`` and its ``merges`` (no added tokens)."""
    tokenizer = Tokenizer(
        models.BPE(
            vocab,
            merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer
