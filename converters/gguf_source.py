"""Reads a reranker GGUF (llama.cpp / GPUStack builds) into canonical weights and a tokenizer.

Architectures (``general.architecture``):

* ``bert``: XLM-R (Unigram ``t5`` tokenizer: bge-reranker-v2-m3, bce-reranker-base_v1,
  jina-reranker-v2) or BERT (WordPiece ``bert`` tokenizer). llama.cpp's converter cuts the first
  ``pad_id + 1`` rows off XLM-R's position table; they are restored as zero rows (only padding
  would ever read them, and padding is masked).
* ``jina-bert-v2``: JinaBERT (jina-reranker-v1-*): ALiBi, GEGLU in one fused ``ffn_up`` (or the
  older split ``ffn_gate`` + ``ffn_up``).
* ``new``: GTE, as written by GPUStack's llama-box converter (upstream llama.cpp has no such
  architecture).

What a file cannot express is recorded in :attr:`LoadedModel.notes` and in the model folder:
llama.cpp's converter drops BERT's pooler, so a ``jina-bert-v2`` file (classifier in ``cls``)
scores ``tanh(cls · h0 + b)`` and a BERT file (classifier in ``cls.output``) ``cls.output · h0 + b``
(llama.cpp's RANK pooling), not the original head.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rerank.converters.bundle import SourceBundle
from rerank.converters.errors import GgufError
from rerank.converters.gguf_file import GgufFile
from rerank.converters.spec import EncoderSpec, LoadedModel, Weights, shared_fields
from rerank.service.model_folder import file_sha256

POOLER_DROPPED = (
    "the GGUF has no BERT pooler (llama.cpp's converter drops it): scores are {form} as llama.cpp computes them, "
    "not the original model's classifier(tanh(pooler(h0))); rankings may agree, values do not"
)
TYPE_IDS_USED = (
    "document tokens get token type 1 from the file's token-type table, as the original BERT model does; "
    "llama.cpp feeds type 0 to every token"
)


def _tensor(t: Weights, name: str) -> np.ndarray:
    try:
        return t[name]
    except KeyError:
        raise GgufError(f"the GGUF has no tensor {name!r}") from None


def load_gguf(f: GgufFile) -> LoadedModel:
    """Reads the opened GGUF ``f`` into a :class:`LoadedModel` (dequantised float32 weights)."""
    path = f.path
    arch = f.architecture
    if arch not in ("bert", "jina-bert-v2", "new"):
        raise GgufError(
            f"{path.name}: architecture {arch!r} is not a supported reranker (bert, jina-bert-v2, new, qwen3)"
        )
    t = f.tensors()
    layers = int(f.key("block_count"))
    hidden = int(f.key("embedding_length"))
    heads = int(f.key("attention.head_count"))
    inter = int(f.key("feed_forward_length"))
    eps = float(f.key("attention.layer_norm_epsilon", 1e-12))
    context = int(f.key("context_length"))
    tokenizer_model = str(f.metadata.get("tokenizer.ggml.model", ""))
    pad_id = int(f.metadata.get("tokenizer.ggml.padding_token_id", 1 if tokenizer_model == "t5" else 0))
    notes: list[str] = []

    w: Weights = {
        "emb.word": _tensor(t, "token_embd.weight"),
        "emb.ln.w": _tensor(t, "token_embd_norm.weight"),
        "emb.ln.b": _tensor(t, "token_embd_norm.bias"),
    }
    if "token_types.weight" in t:
        # llama-quantize stores one-row matrices (a single token type) as vectors
        w["emb.type"] = t["token_types.weight"].reshape(-1, hidden)
    for i in range(layers):
        b, o = f"blk.{i}.", f"L{i}."
        if b + "attn_qkv.weight" in t:
            w[o + "qkv.w"], w[o + "qkv.b"] = t[b + "attn_qkv.weight"], _tensor(t, b + "attn_qkv.bias")
        else:
            w[o + "qkv.w"] = np.concatenate([_tensor(t, f"{b}attn_{n}.weight") for n in "qkv"], 0)
            w[o + "qkv.b"] = np.concatenate([_tensor(t, f"{b}attn_{n}.bias") for n in "qkv"], 0)
        w[o + "o.w"], w[o + "o.b"] = _tensor(t, b + "attn_output.weight"), _tensor(t, b + "attn_output.bias")
        w[o + "attn_ln.w"], w[o + "attn_ln.b"] = (
            _tensor(t, b + "attn_output_norm.weight"),
            _tensor(t, b + "attn_output_norm.bias"),
        )
        if b + "ffn_gate.weight" in t:  # older jina-bert-v2 conversions: gate (activated) and up apart
            w[o + "up.w"] = np.concatenate([t[b + "ffn_gate.weight"], _tensor(t, b + "ffn_up.weight")], 0)
        else:
            w[o + "up.w"] = _tensor(t, b + "ffn_up.weight")
        if b + "ffn_up.bias" in t:
            w[o + "up.b"] = t[b + "ffn_up.bias"]
        w[o + "down.w"], w[o + "down.b"] = _tensor(t, b + "ffn_down.weight"), _tensor(t, b + "ffn_down.bias")
        w[o + "ffn_ln.w"], w[o + "ffn_ln.b"] = (
            _tensor(t, b + "layer_output_norm.weight"),
            _tensor(t, b + "layer_output_norm.bias"),
        )

    if "cls.output.weight" in t and "cls.weight" in t:
        w["head.dense.w"], w["head.dense.b"] = t["cls.weight"], _tensor(t, "cls.bias")
        w["head.out.w"], w["head.out.b"] = t["cls.output.weight"], _tensor(t, "cls.output.bias")
        head = "pooler" if arch == "new" or tokenizer_model == "bert" else "roberta"
    elif "cls.output.weight" in t:
        w["head.out.w"], w["head.out.b"] = t["cls.output.weight"], _tensor(t, "cls.output.bias")
        head = "linear"
        notes.append(POOLER_DROPPED.format(form="classifier(h0)"))
    elif "cls.weight" in t:
        w["head.out.w"], w["head.out.b"] = t["cls.weight"], _tensor(t, "cls.bias")
        head = "tanh"
        notes.append(POOLER_DROPPED.format(form="tanh(classifier(h0))"))
    else:
        raise GgufError(f"{path.name}: no classifier (cls) tensor: this is an embedding model, not a reranker")
    w["head.out.w"] = w["head.out.w"].reshape(-1, hidden)  # a one-label classifier may come as a vector
    if w["head.out.w"].shape[0] != 1:
        raise GgufError(f"{path.name}: the classifier has {w['head.out.w'].shape[0]} outputs; a reranker has one")

    common = shared_fields(
        w, layers=layers, hidden=hidden, heads=heads, intermediate=inter, eps=eps, pad_id=pad_id, head=head
    )
    if arch == "bert" and tokenizer_model == "t5":
        table = _tensor(t, "position_embd.weight")
        w["emb.pos"] = np.concatenate([np.zeros((pad_id + 1, hidden), np.float32), table], 0)
        spec = EncoderSpec(
            family="xlm-roberta",
            max_length=context,
            positions="learned",
            feed_forward="gelu",
            position_offset=pad_id + 1,
            positions_from_pad=True,
            **common,
        )
    elif arch == "bert":
        w["emb.pos"] = _tensor(t, "position_embd.weight")
        type_ids = common["type_vocab"] > 1
        if type_ids:
            notes.append(TYPE_IDS_USED)
        spec = EncoderSpec(
            family="bert",
            max_length=context,
            positions="learned",
            feed_forward="gelu",
            type_ids_input=type_ids,
            **common,
        )
    elif arch == "jina-bert-v2":
        spec = EncoderSpec(family="jina-bert", max_length=context, positions="alibi", feed_forward="geglu", **common)
    else:
        base, scale = _new_rope(f, hidden // heads)
        spec = EncoderSpec(
            family="gte",
            max_length=context,
            positions="rope",
            feed_forward="gelu-gated-second",
            rope_base=base,
            rope_position_scale=scale,
            **common,
        )
        if not f.key("rope.scaling.factor"):
            notes.append("the GGUF records no RoPE scaling factor: RoPE runs unscaled with the file's freq_base")
    loaded = LoadedModel(
        spec=spec,
        weights=w,
        source=str(path),
        source_format="gguf",
        notes=notes,
        files_sha256={path.name: file_sha256(path)},
        source_dtype=f.dominant_type().lower(),
        layout="gguf",
    )
    return loaded


def _new_rope(f: GgufFile, head_dim: int) -> tuple[float, float]:
    """(base, position scale) for llama-box's ``new`` architecture.

    llama-box folds GTE's static NTK factor ``f`` into ``rope.freq_base = θ · f^(d/(d-1))``
    (inferred from its converter patch; no published file could be checked here). When the file
    also records ``rope.scaling.factor``, θ is recovered and the exact HF rule restored:
    base ``θ·f``, positions divided by ``f^(2/d)``.
    """
    freq_base = float(f.key("rope.freq_base", 10000.0))
    factor = f.key("rope.scaling.factor")
    if not factor:
        return freq_base, 1.0
    factor = float(factor)
    theta = freq_base / factor ** (head_dim / (head_dim - 1))
    return theta * factor, factor ** (2.0 / head_dim)


def load_gguf_bundle(f: GgufFile, progress: Callable[[str], None] = print) -> SourceBundle:
    """A :class:`SourceBundle` for an opened GGUF file: weights plus the tokenizer rebuilt from
    its metadata."""
    from rerank.converters import qwen3  # Qwen3-Reranker, a decoder: its own reader

    if qwen3.matches_gguf(f):
        return qwen3.load_gguf_bundle(f, progress=progress)
    from rerank.converters.gguf_tokenizer import tokenizer_from_gguf

    loaded = load_gguf(f)
    progress(f"gguf: {f.architecture}, {loaded.spec.num_layers} layers, {f.dominant_type()}; rebuilding the tokenizer")
    if f.duplicate_keys:
        progress(f"gguf: note: duplicate metadata keys {sorted(set(f.duplicate_keys))}: the first value is used")
    for note in loaded.notes:
        progress(f"gguf: note: {note}")
    return SourceBundle(loaded=loaded, folder=None, tokenizer=tokenizer_from_gguf(f.metadata))
