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

from collections.abc import Callable
from typing import Any

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from rerank.converters.bundle import SourceBundle
from rerank.converters.errors import GgufError
from rerank.converters.gguf_file import GgufFile
from rerank.converters.qwen3.prompt import MODEL_CARD_MAX_LENGTH, NO, YES
from rerank.converters.qwen3.spec import FAMILY, Qwen3Spec
from rerank.converters.spec import LoadedModel, Weights
from rerank.service.model_folder import file_sha256

ARCHITECTURE = "qwen3"
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
"""Qwen2's pre-tokenizer split, as transformers' ``Qwen2Tokenizer`` writes it."""
_NORMAL, _CONTROL, _USER_DEFINED, _UNUSED = 1, 3, 4, 5
HEAD_FROM_LM = "the GGUF has no reranker head (cls.output): the yes/no rows were read from its LM head ({where})"


def is_qwen3(f: GgufFile) -> bool:
    return f.architecture == ARCHITECTURE


def _tensor(t: Weights, name: str) -> np.ndarray:
    try:
        return t[name]
    except KeyError:
        raise GgufError(f"the GGUF has no tensor {name!r}") from None


def _head(f: GgufFile, t: Weights, yes: int, no: int, hidden: int, notes: list[str]) -> np.ndarray:
    """The (no, yes) rows of the LM head: from ``cls.output`` by its labels, else the LM head."""
    if "cls.output.weight" in t:
        rows = t["cls.output.weight"].reshape(-1, hidden)
        labels = [str(label) for label in (f.key("classifier.output_labels") or ["yes", "no"])]
        if rows.shape[0] != 2 or sorted(labels) != ["no", "yes"]:
            raise GgufError(
                f"{f.path.name}: cls.output has labels {labels} ({rows.shape[0]} rows); expected yes and no"
            )
        return np.stack([rows[labels.index(NO)], rows[labels.index(YES)]])
    where = "output.weight" if "output.weight" in t else "token_embd.weight, tied"
    notes.append(HEAD_FROM_LM.format(where=where))
    return _tensor(t, "output.weight" if "output.weight" in t else "token_embd.weight")[[no, yes]].copy()


def load_gguf(f: GgufFile) -> tuple[LoadedModel, Tokenizer]:
    """The opened GGUF ``f`` as dequantised float32 weights, and its tokenizer."""
    tokenizer = tokenizer_from_gguf(f.metadata)
    yes, no = tokenizer.token_to_id(YES), tokenizer.token_to_id(NO)
    if yes is None or no is None:
        raise GgufError(f"{f.path.name}: the vocabulary has no single token 'yes' or 'no': not a Qwen3-Reranker")
    t = f.tensors()
    layers, hidden = int(f.key("block_count")), int(f.key("embedding_length"))
    heads = int(f.key("attention.head_count"))
    kv_heads = int(f.key("attention.head_count_kv", heads))
    head_dim = int(f.key("attention.key_length", hidden // heads))
    notes: list[str] = []
    w: Weights = {"emb.word": _tensor(t, "token_embd.weight"), "norm": _tensor(t, "output_norm.weight")}
    for i in range(layers):
        b, o = f"blk.{i}.", f"L{i}."
        w[o + "attn_norm"], w[o + "ffn_norm"] = _tensor(t, b + "attn_norm.weight"), _tensor(t, b + "ffn_norm.weight")
        for ours, theirs in (("q", "attn_q"), ("k", "attn_k"), ("v", "attn_v"), ("o", "attn_output")):
            w[f"{o}{ours}.w"] = _tensor(t, f"{b}{theirs}.weight")
            if f"{b}{theirs}.bias" in t:
                w[f"{o}{ours}.b"] = t[f"{b}{theirs}.bias"]
        w[o + "q_norm"], w[o + "k_norm"] = _tensor(t, b + "attn_q_norm.weight"), _tensor(t, b + "attn_k_norm.weight")
        for name in ("gate", "up", "down"):
            w[f"{o}{name}.w"] = _tensor(t, f"{b}ffn_{name}.weight")
    w["head.w"] = _head(f, t, yes, no, hidden, notes)
    pad = f.metadata.get("tokenizer.ggml.padding_token_id", f.metadata.get("tokenizer.ggml.eos_token_id", 0))
    spec = Qwen3Spec(
        num_layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=int(f.key("feed_forward_length")),
        rms_norm_eps=float(f.key("attention.layer_norm_rms_epsilon", 1e-6)),
        rope_base=float(f.key("rope.freq_base", 10000.0)),
        max_length=min(MODEL_CARD_MAX_LENGTH, int(f.key("context_length", MODEL_CARD_MAX_LENGTH))),
        yes_id=yes,
        no_id=no,
        pad_id=int(pad),
        attention_bias="blk.0.attn_q.bias" in t,
    )
    loaded = LoadedModel(
        spec=spec,  # type: ignore[arg-type]  # the pipeline reads the fields every spec has
        weights=w,
        source=str(f.path),
        source_format="gguf",
        notes=notes,
        files_sha256={f.path.name: file_sha256(f.path)},
        source_dtype=f.dominant_type().lower(),
        layout="gguf",
    )
    return loaded, tokenizer


def tokenizer_from_gguf(metadata: dict[str, Any]) -> Tokenizer:
    """Qwen2's tokenizer from ``tokenizer.ggml.*``: byte-level BPE as transformers builds it."""
    kind, pre = metadata.get("tokenizer.ggml.model"), metadata.get("tokenizer.ggml.pre")
    if kind != "gpt2" or pre != "qwen2":
        raise GgufError(f"tokenizer {kind!r} with pre-tokenizer {pre!r}: a Qwen3-Reranker's is 'gpt2' with 'qwen2'")
    tokens = list(metadata["tokenizer.ggml.tokens"])
    types = np.asarray(metadata.get("tokenizer.ggml.token_type", np.full(len(tokens), _NORMAL)), dtype=np.int64)
    added = np.flatnonzero((types == _CONTROL) | (types == _USER_DEFINED)).tolist()
    # Unused ids (llama.cpp's "[PAD<n>]" for embedding rows past the tokenizer) are no tokens at
    # all. Added tokens stay in the model's vocabulary, so that each keeps its id when it is added
    # below (no merge ever builds them).
    vocab = {tok: i for i, tok in enumerate(tokens) if types[i] != _UNUSED}
    merges = [tuple(m.split(" ", 1)) for m in metadata["tokenizer.ggml.merges"]]
    tokenizer = qwen2_tokenizer(vocab, merges)  # type: ignore[arg-type]  # each merge splits in two
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


def load_gguf_bundle(f: GgufFile, progress: Callable[[str], None] = print) -> SourceBundle:
    """A :class:`SourceBundle` for an opened Qwen3 GGUF file."""
    loaded, tokenizer = load_gguf(f)
    progress(f"gguf: {FAMILY}, {loaded.spec.num_layers} layers, {f.dominant_type()}; tokenizer rebuilt (Qwen2 BPE)")
    for note in loaded.notes:
        progress(f"gguf: note: {note}")
    return SourceBundle(loaded=loaded, folder=None, tokenizer=tokenizer)
