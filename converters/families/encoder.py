"""What the encoder (cross-encoder) families share: readers, the weight check, the graph.

Every encoder family is a post-LayerNorm transformer encoder read into an
:class:`~rerank.converters.spec.EncoderSpec` and the canonical weights of
:mod:`rerank.converters.spec`, built by the one graph builder :mod:`rerank.converters.onnx_graph`
(the spec's switches pick positions, feed-forward and head) and proven against a transformers
(or plain PyTorch) model (:mod:`rerank.converters.reference`). A family module declares only
what differs: its tensor names (:class:`EncoderNames`), how its spec is completed
(positions, feed-forward), its GGUF traits, its reference model and its catalog entries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from rerank.converters.errors import CheckpointError, GgufError, SourceError
from rerank.converters.families.base import (
    CatalogEntry,
    Checkpoint,
    CheckpointLayout,
    GgufLayout,
    ModelFamily,
    Read,
    Reference,
)
from rerank.converters.fields import (
    MAX_HEADS,
    MAX_INTERMEDIATE,
    MAX_LAYERS,
    MAX_LENGTH,
    MAX_VOCAB,
    Fields,
    heads_divide,
    shape_text,
)
from rerank.converters.spec import EncoderSpec, LoadedModel, Weights

if TYPE_CHECKING:
    import onnx
    from tokenizers import Tokenizer

    from rerank.converters.gguf_file import GgufFile
    from rerank.service.model_folder import PairTemplate


@dataclass(frozen=True)
class Sizes:
    """The sizes every encoder declares, checked."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    eps: float
    pad_id: int

    def common(self, weights: Weights, head: str) -> dict[str, Any]:
        """The :class:`EncoderSpec` fields every reader fills the same way; the token-type
        table's size is read from ``weights`` (0 without one)."""
        return {
            "num_layers": self.layers,
            "hidden": self.hidden,
            "heads": self.heads,
            "intermediate": self.intermediate,
            "layer_norm_eps": self.eps,
            "pad_id": self.pad_id,
            "head": head,
            "type_vocab": int(weights["emb.type"].shape[0]) if "emb.type" in weights else 0,
        }


@dataclass
class Parts:
    """What a family's spec step gets from the shared reader."""

    tensors: Weights
    """The source's tensors: a checkpoint's without the backbone prefix, a GGUF's by GGUF name."""
    weights: Weights
    """The canonical weights read so far (the step adds the position table, where there is one)."""
    sizes: Sizes
    common: dict[str, Any]
    """The :class:`EncoderSpec` fields every family fills the same way (:meth:`Sizes.common`)."""
    notes: list[str]
    """What the source cannot express (the step may add to them)."""


def _sizes(f: Fields, keys: tuple[str, str, str, str, str], eps_default: float, pad_id: int) -> Sizes:
    layers_key, hidden_key, heads_key, inter_key, eps_key = keys
    hidden = f.integer(hidden_key)
    heads = f.integer(heads_key, maximum=MAX_HEADS)
    heads_divide(f, hidden, heads, heads_key)
    return Sizes(
        layers=f.integer(layers_key, maximum=MAX_LAYERS),
        hidden=hidden,
        heads=heads,
        intermediate=f.integer(inter_key, maximum=MAX_INTERMEDIATE),
        eps=f.number(eps_key, eps_default, high=1.0),
        pad_id=pad_id,
    )


# --- Hugging Face checkpoints --------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderNames:
    """Where a checkpoint layout keeps each canonical weight (names after the backbone prefix)."""

    layer: str
    """Layer ``i``'s prefix, with ``{i}``."""
    qkv: tuple[str, ...]
    """One fused q/k/v projection, or the query, key and value projections to stack."""
    o: str
    attn_ln: str
    up: str
    down: str
    ffn_ln: str
    up_bias: bool = True
    emb_ln: str = "embeddings.LayerNorm"
    head: str = "roberta"
    """``roberta``: ``classifier.dense`` + ``classifier.out_proj``; ``pooler``: the backbone's
    ``pooler.dense`` + ``classifier``."""


BERT_NAMES = EncoderNames(
    layer="encoder.layer.{i}",
    qkv=("attention.self.query", "attention.self.key", "attention.self.value"),
    o="attention.output.dense",
    attn_ln="attention.output.LayerNorm",
    up="intermediate.dense",
    down="output.dense",
    ffn_ln="output.LayerNorm",
    head="pooler",
)
"""transformers' BERT names."""

XLMR_NAMES = replace(BERT_NAMES, head="roberta")
"""transformers' XLM-R names: BERT's, with the RoBERTa head."""

WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_python")


def checkpoint_sizes(config: Fields) -> Sizes:
    """The encoder sizes of ``config.json``, checked (and its activation: exact GELU only)."""
    act = config.text("hidden_act", "gelu")
    if act not in SUPPORTED_ACTIVATIONS:
        raise config.fail("hidden_act", f"is {act!r}, which is not supported (only exact GELU)")
    pad_id = config.integer("pad_token_id", 1, minimum=0, maximum=MAX_VOCAB)
    keys = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "layer_norm_eps")
    return _sizes(config, keys, 1e-12, pad_id)


def strip_prefix(tensors: Weights, where: str) -> Weights:
    """The tensors without the backbone prefix (``roberta.``, ``bert.``, ``new.``, ...), which is
    found by the word embeddings' name."""
    for key in tensors:
        if key.endswith(WORD_EMBEDDINGS):
            prefix = key[: -len(WORD_EMBEDDINGS)]
            return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in tensors.items()}
    raise CheckpointError(f"{where}: no {WORD_EMBEDDINGS} tensor: not a supported encoder")


def take(t: Weights, key: str, where: str) -> np.ndarray:
    try:
        return np.asarray(t[key], dtype=np.float32)
    except KeyError:
        raise CheckpointError(f"{where}: missing tensor {key!r}") from None


def stacked(parts: list[np.ndarray], what: str, where: str, error: type[Exception]) -> np.ndarray:
    """``parts`` stacked along their rows, refusing parts whose columns disagree."""
    if len({p.shape[1:] for p in parts}) != 1 or parts[0].ndim not in (1, 2):
        shapes = ", ".join("x".join(map(str, p.shape)) for p in parts)
        raise error(f"{where}: the parts of {what} have shapes that do not stack ({shapes})")
    return np.concatenate(parts, 0)


def read_checkpoint(ck: Checkpoint, names: EncoderNames, spec: Callable[[Checkpoint, Parts], EncoderSpec]) -> Read:
    """Reads an encoder checkpoint whose layout keeps its weights under ``names``;
    ``spec(checkpoint, parts)`` completes the family's spec."""
    where = str(ck.folder)
    sizes = checkpoint_sizes(ck.config)
    raw = ck.load()
    t = strip_prefix(raw, where)

    def pair(name: str, source: Weights = t, bias: bool = True) -> tuple[np.ndarray, ...]:
        return (take(source, f"{name}.weight", where),) + ((take(source, f"{name}.bias", where),) if bias else ())

    w: Weights = {"emb.word": take(t, WORD_EMBEDDINGS, where)}
    if "embeddings.token_type_embeddings.weight" in t:
        w["emb.type"] = take(t, "embeddings.token_type_embeddings.weight", where)
    w["emb.ln.w"], w["emb.ln.b"] = pair(names.emb_ln)
    for i in range(sizes.layers):
        p, o = names.layer.format(i=i), f"L{i}."
        if len(names.qkv) == 1:
            w[o + "qkv.w"], w[o + "qkv.b"] = pair(f"{p}.{names.qkv[0]}")
        else:
            parts = [pair(f"{p}.{n}") for n in names.qkv]
            w[o + "qkv.w"] = stacked([wt for wt, _ in parts], f"layer {i}'s q/k/v weights", where, CheckpointError)
            w[o + "qkv.b"] = stacked([bs for _, bs in parts], f"layer {i}'s q/k/v biases", where, CheckpointError)
        w[o + "o.w"], w[o + "o.b"] = pair(f"{p}.{names.o}")
        w[o + "attn_ln.w"], w[o + "attn_ln.b"] = pair(f"{p}.{names.attn_ln}")
        if names.up_bias:
            w[o + "up.w"], w[o + "up.b"] = pair(f"{p}.{names.up}")
        else:
            (w[o + "up.w"],) = pair(f"{p}.{names.up}", bias=False)
        w[o + "down.w"], w[o + "down.b"] = pair(f"{p}.{names.down}")
        w[o + "ffn_ln.w"], w[o + "ffn_ln.b"] = pair(f"{p}.{names.ffn_ln}")
    if names.head == "roberta":
        w["head.dense.w"], w["head.dense.b"] = pair("classifier.dense", raw)
        w["head.out.w"], w["head.out.b"] = pair("classifier.out_proj", raw)
    else:
        w["head.dense.w"], w["head.dense.b"] = pair("pooler.dense")
        w["head.out.w"], w["head.out.b"] = pair("classifier", raw)
    if w["head.out.w"].ndim and w["head.out.w"].shape[0] != 1:
        raise CheckpointError(
            f"{where}: the classifier has {w['head.out.w'].shape[0]} outputs; a reranker has exactly one"
        )
    parts = Parts(t, w, sizes, sizes.common(w, names.head), [])
    return Read(spec(ck, parts), w, parts.notes)


def learned_positions(ck: Checkpoint, parts: Parts) -> int:
    """Adds the checkpoint's learned position table to the weights; returns config.json's
    ``max_position_embeddings``."""
    parts.weights["emb.pos"] = take(parts.tensors, "embeddings.position_embeddings.weight", str(ck.folder))
    return max_positions(ck)


def max_positions(ck: Checkpoint) -> int:
    return ck.config.integer("max_position_embeddings", 512, maximum=MAX_LENGTH)


# --- GGUF files -----------------------------------------------------------------------------------

POOLER_DROPPED = (
    "the GGUF has no BERT pooler (llama.cpp's converter drops it): scores are {form} as llama.cpp computes them, "
    "not the original model's classifier(tanh(pooler(h0))); rankings may agree, values do not"
)


def tokenizer_model(f: GgufFile) -> str:
    return str(f.metadata.get("tokenizer.ggml.model", ""))


def gguf_fields(f: GgufFile) -> Fields:
    """``{architecture}.*`` metadata, checked."""
    return Fields(f.metadata, str(f.path), GgufError, f"{f.architecture}.")


def gguf_sizes(f: GgufFile) -> Sizes:
    meta = gguf_fields(f)
    pad_default = 1 if tokenizer_model(f) == "t5" else 0
    pad_id = Fields(f.metadata, str(f.path), GgufError).integer(
        "tokenizer.ggml.padding_token_id", pad_default, minimum=0, maximum=MAX_VOCAB
    )
    keys = ("block_count", "embedding_length", "attention.head_count", "feed_forward_length")
    return _sizes(meta, (*keys, "attention.layer_norm_epsilon"), 1e-12, pad_id)


def gguf_context(f: GgufFile) -> int:
    return gguf_fields(f).integer("context_length", maximum=MAX_LENGTH)


def gguf_tensor(f: GgufFile, parts: Parts, name: str) -> np.ndarray:
    """A tensor of the GGUF ``f`` by its GGUF name."""
    return _tensor(parts.tensors, name, str(f.path))


def _tensor(t: Weights, name: str, where: str) -> np.ndarray:
    try:
        return t[name]
    except KeyError:
        raise GgufError(f"{where}: the GGUF has no tensor {name!r}") from None


def _rows(array: np.ndarray, hidden: int, what: str, where: str) -> np.ndarray:
    """``array`` as rows of ``hidden`` (llama-quantize stores one-row matrices as vectors)."""
    if array.size % hidden:
        raise GgufError(f"{where}: {what} has {array.size} values, not whole rows of {hidden}")
    return array.reshape(-1, hidden)


def read_gguf(f: GgufFile, full_head: str, spec: Callable[[GgufFile, Parts], EncoderSpec]) -> Read:
    """Reads a BERT-style GGUF (llama.cpp's ``bert``, ``jina-bert-v2``, llama-box's ``new``).

    ``full_head``: the head of a file that kept the pooler (``cls`` and ``cls.output``); a file
    with only one of them gets llama.cpp's pooler-less head and a note. ``spec(file, parts)``
    completes the family's spec."""
    where = str(f.path)
    sizes = gguf_sizes(f)
    hidden = sizes.hidden
    t = f.tensors()
    notes: list[str] = []

    def pair(name: str) -> tuple[np.ndarray, np.ndarray]:
        return _tensor(t, f"{name}.weight", where), _tensor(t, f"{name}.bias", where)

    w: Weights = {"emb.word": _tensor(t, "token_embd.weight", where)}
    w["emb.ln.w"], w["emb.ln.b"] = pair("token_embd_norm")
    if "token_types.weight" in t:
        w["emb.type"] = _rows(t["token_types.weight"], hidden, "token_types.weight", where)
    for i in range(sizes.layers):
        b, o = f"blk.{i}.", f"L{i}."
        if b + "attn_qkv.weight" in t:
            w[o + "qkv.w"], w[o + "qkv.b"] = pair(b + "attn_qkv")
        else:
            for kind, short in (("weight", "w"), ("bias", "b")):
                parts = [_tensor(t, f"{b}attn_{n}.{kind}", where) for n in "qkv"]
                w[f"{o}qkv.{short}"] = stacked(parts, f"block {i}'s attn_q/k/v {kind}s", where, GgufError)
        w[o + "o.w"], w[o + "o.b"] = pair(b + "attn_output")
        w[o + "attn_ln.w"], w[o + "attn_ln.b"] = pair(b + "attn_output_norm")
        if b + "ffn_gate.weight" in t:  # older jina-bert-v2 conversions: gate (activated) and up apart
            parts = [t[b + "ffn_gate.weight"], _tensor(t, b + "ffn_up.weight", where)]
            w[o + "up.w"] = stacked(parts, f"block {i}'s ffn_gate and ffn_up", where, GgufError)
        else:
            w[o + "up.w"] = _tensor(t, b + "ffn_up.weight", where)
        if b + "ffn_up.bias" in t:
            w[o + "up.b"] = t[b + "ffn_up.bias"]
        w[o + "down.w"], w[o + "down.b"] = pair(b + "ffn_down")
        w[o + "ffn_ln.w"], w[o + "ffn_ln.b"] = pair(b + "layer_output_norm")

    if "cls.output.weight" in t and "cls.weight" in t:
        w["head.dense.w"], w["head.dense.b"] = pair("cls")
        w["head.out.w"], w["head.out.b"] = pair("cls.output")
        head = full_head
    elif "cls.output.weight" in t:
        w["head.out.w"], w["head.out.b"] = pair("cls.output")
        head = "linear"
        notes.append(POOLER_DROPPED.format(form="classifier(h0)"))
    elif "cls.weight" in t:
        w["head.out.w"], w["head.out.b"] = pair("cls")
        head = "tanh"
        notes.append(POOLER_DROPPED.format(form="tanh(classifier(h0))"))
    else:
        raise GgufError(f"{f.path.name}: no classifier (cls) tensor: this is an embedding model, not a reranker")
    if w["head.out.w"].ndim == 1:  # a one-label classifier may come as a vector
        w["head.out.w"] = w["head.out.w"].reshape(1, -1)
    if w["head.out.w"].shape[0] != 1:
        raise GgufError(f"{f.path.name}: the classifier has {w['head.out.w'].shape[0]} outputs; a reranker has one")
    parts = Parts(t, w, sizes, sizes.common(w, head), notes)
    return Read(spec(f, parts), w, notes)


# --- the shared math --------------------------------------------------------------------------


def check_weights(spec: EncoderSpec, w: Weights, where: str, error: type[Exception]) -> None:
    """Refuses canonical weights whose shapes disagree with ``spec`` (the sizes a source declares
    are not trusted to match its tensors), and a spec no graph can be built for."""
    H, I = spec.hidden, spec.intermediate
    vocab = w["emb.word"].shape[0] if w["emb.word"].ndim == 2 else 0
    if not 0 < vocab <= MAX_VOCAB:
        raise error(f"{where}: shape {shape_text(w['emb.word'])} for the word embeddings; expected [vocabulary, {H}]")
    if spec.pad_id >= vocab:
        raise error(f"{where}: the padding token id {spec.pad_id} is outside the vocabulary of {vocab}")
    if not 1 <= spec.max_length <= MAX_LENGTH:
        raise error(f"{where}: the model reads at most {spec.max_length} tokens; expected 1 to {MAX_LENGTH}")
    for name, value in (("rope_base", spec.rope_base), ("rope_position_scale", spec.rope_position_scale)):
        if not (np.isfinite(value) and value > 0):
            raise error(f"{where}: RoPE {name} is {value}; expected a positive number")
    if spec.positions == "rope" and spec.head_dim % 2:
        raise error(f"{where}: RoPE needs an even head dimension, not {spec.head_dim}")
    ffn_rows = I if spec.feed_forward == "gelu" else 2 * I
    expected: dict[str, tuple[int, ...]] = {"emb.word": (vocab, H), "emb.ln.w": (H,), "emb.ln.b": (H,)}
    if spec.positions == "learned":
        rows = spec.position_offset + spec.max_length
        table = w.get("emb.pos")
        if table is None or table.ndim != 2 or table.shape[0] < rows:
            raise error(
                f"{where}: shape {shape_text(table)} for {_WHAT['emb.pos']}; {spec.max_length} tokens need {rows} rows"
            )
        expected["emb.pos"] = (table.shape[0], H)
    if "emb.type" in w:
        types = w["emb.type"].shape[0] if w["emb.type"].ndim == 2 else 0
        if types < (2 if spec.type_ids_input else 1):
            raise error(f"{where}: shape {shape_text(w['emb.type'])} for {_WHAT['emb.type']}")
        expected["emb.type"] = (types, H)
    for i in range(spec.num_layers):
        o = f"L{i}."
        expected |= {o + "qkv.w": (3 * H, H), o + "qkv.b": (3 * H,), o + "o.w": (H, H), o + "o.b": (H,)}
        expected |= {o + "attn_ln.w": (H,), o + "attn_ln.b": (H,), o + "up.w": (ffn_rows, H)}
        if o + "up.b" in w:
            expected[o + "up.b"] = (ffn_rows,)
        expected |= {o + "down.w": (H, I), o + "down.b": (H,), o + "ffn_ln.w": (H,), o + "ffn_ln.b": (H,)}
    if spec.head in ("roberta", "pooler"):
        expected |= {"head.dense.w": (H, H), "head.dense.b": (H,)}
    expected |= {"head.out.w": (1, H), "head.out.b": (1,)}
    for name, shape in expected.items():
        value = w.get(name)
        if value is None or value.shape != shape:
            raise error(
                f"{where}: shape {shape_text(value)} for {_described(name)}; the model's sizes need {shape_text(shape)}"
            )


_WHAT = {
    "emb.word": "the word embeddings",
    "emb.pos": "the position embeddings",
    "emb.type": "the token-type embeddings",
    "emb.ln": "the embeddings' LayerNorm",
    "qkv": "the query/key/value projection",
    "o": "the attention output projection",
    "attn_ln": "the attention LayerNorm",
    "up": "the feed-forward up projection",
    "down": "the feed-forward down projection",
    "ffn_ln": "the feed-forward LayerNorm",
    "head.dense": "the classifier's dense layer (or pooler)",
    "head.out": "the classifier",
}


def _described(name: str) -> str:
    """A canonical weight's name as a user reads it: ``L3.qkv.b`` -> layer 3's q/k/v projection bias."""
    stem, kind = name.rsplit(".", 1)
    part = {"w": " weight", "b": " bias"}.get(kind, "")
    if stem.startswith("L"):
        layer, _, stem = stem.partition(".")
        return f"layer {layer[1:]}'s {_WHAT[stem].removeprefix('the ')}{part}"
    return f"{_WHAT.get(stem, _WHAT.get(name, name))}{part}"


def build_graph(
    spec: EncoderSpec, weights: Weights, *, graph_name: str = "cross_encoder", fused_attention: bool = False
) -> onnx.ModelProto:
    from rerank.converters import onnx_graph

    return onnx_graph.build_graph(spec, weights, graph_name=graph_name, fused_attention=fused_attention)


def graph_facts(loaded: LoadedModel) -> dict[str, int]:
    """What the server checks ``rerank.json`` against: the vocabulary's and the position
    table's sizes (RoPE tables are built for ``max_length``; ALiBi has none)."""
    spec, weights = loaded.spec, loaded.weights
    assert isinstance(spec, EncoderSpec)
    facts = {"vocab_rows": int(weights["emb.word"].shape[0])}
    if "emb.pos" in weights:
        facts["position_rows"] = int(weights["emb.pos"].shape[0])
        facts["position_offset"] = int(spec.position_offset)
    elif spec.positions == "rope":
        facts["position_rows"], facts["position_offset"] = spec.max_length, 0
    return facts


def pair_template(tokenizer: Tokenizer, spec: EncoderSpec) -> PairTemplate:
    """The pair layout the tokenizer's own post-processor gives (``<s> q </s></s> d </s>``, ...)."""
    from rerank.service.model_folder import template_from_tokenizer

    try:
        return template_from_tokenizer(tokenizer, pad_id=spec.pad_id)
    except ValueError as exc:  # the tokenizer's post-processor lays a pair out some other way
        raise SourceError(f"the tokenizer cannot be served: {exc}") from exc


def gguf_tokenizer(metadata: Mapping[str, Any]) -> Tokenizer:
    from rerank.converters.gguf_tokenizer import tokenizer_from_gguf

    return tokenizer_from_gguf(dict(metadata))


def family(
    name: str,
    *,
    checkpoints: tuple[CheckpointLayout, ...],
    ggufs: tuple[GgufLayout, ...],
    reference: Reference,
    catalog: tuple[CatalogEntry, ...] = (),
) -> ModelFamily:
    """An encoder family: its own layouts, reference and catalog, the shared math."""
    return ModelFamily(
        name=name,
        checkpoints=checkpoints,
        ggufs=ggufs,
        build_graph=build_graph,
        graph_facts=graph_facts,
        pair_template=pair_template,
        check=check_weights,
        reference=reference,
        catalog=catalog,
    )
