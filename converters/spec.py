"""The converter's own description of a model: a spec (the facts that decide the math) plus weights.

Every source format (a Hugging Face checkpoint in any of its published weight layouts, or a
GGUF file) is read, by its family (:mod:`rerank.converters.families`), into the same two things:

* a spec (:class:`ModelSpec`; the encoder families' is :class:`EncoderSpec`): sizes, position
  scheme, feed-forward kind, classifier head, and
* a :data:`Weights` dict with *canonical* tensor names, in PyTorch's ``Linear`` orientation
  (``[out_features, in_features]``), float32.

The family's graph builder only ever sees these, so one graph definition serves every source
and every checkpoint layout of the family.

The encoder families' canonical names (:mod:`rerank.converters.onnx_graph` reads them)::

    emb.word            [vocab, hidden]
    emb.pos             [positions, hidden]          learned positions only
    emb.type            [type_vocab, hidden]         optional
    emb.ln.w / emb.ln.b [hidden]
    L{i}.qkv.w          [3*hidden, hidden]           q, k, v stacked in that order
    L{i}.qkv.b          [3*hidden]
    L{i}.o.w / .o.b     [hidden, hidden] / [hidden]
    L{i}.attn_ln.w/.b   [hidden]                     post-attention LayerNorm
    L{i}.up.w           [ffn_rows, hidden]           ffn_rows = intermediate, or 2*intermediate for gated kinds
    L{i}.up.b           [ffn_rows]                   optional (gated kinds have none)
    L{i}.down.w / .b    [hidden, intermediate] / [hidden]
    L{i}.ffn_ln.w/.b    [hidden]                     post-feed-forward LayerNorm
    head.dense.w / .b   [hidden, hidden] / [hidden]  RoBERTa head dense, or BERT pooler; absent for tanh/linear
    head.out.w / .b     [1, hidden] / [1]            the scoring projection
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

import numpy as np

Weights = dict[str, np.ndarray]


class ModelSpec(Protocol):
    """What the conversion pipeline reads of any family's spec (the rest is the family's own)."""

    @property
    def family(self) -> str:
        """The family's name (:attr:`rerank.converters.families.base.ModelFamily.name`)."""
        ...

    @property
    def num_layers(self) -> int: ...

    @property
    def hidden(self) -> int: ...

    @property
    def max_length(self) -> int:
        """Longest sequence the model reads, special tokens included."""
        ...

    @property
    def pad_id(self) -> int: ...

    @property
    def type_ids_input(self) -> bool:
        """The graph has a ``token_type_ids`` input."""
        ...

    def to_json(self) -> dict:
        """Recorded in the model folder's ``rerank.json`` (``spec``)."""
        ...


Positions = Literal["learned", "alibi", "rope"]

FeedForward = Literal["gelu", "geglu", "gelu-gated-second"]
"""``gelu``: down(gelu(up x)). ``geglu`` (JinaBERT): up gives [a | b], down(gelu(a) * b).
``gelu-gated-second`` (GTE): up gives [up | gate], down(up * gelu(gate))."""

Head = Literal["roberta", "pooler", "tanh", "linear"]
"""``roberta``: out(tanh(dense(h0))). ``pooler`` (BERT): out(tanh(pooler(h0))), the same math
under BERT's names. ``tanh`` and ``linear``: tanh(out(h0)) and out(h0) — what llama.cpp computes
for a BERT-style GGUF whose pooler its converter dropped (the classifier lands in ``cls`` for
JinaBERT, in ``cls.output`` for BERT); neither is the original model's head."""


@dataclass(frozen=True)
class EncoderSpec:
    """The facts that decide a cross-encoder's math (the encoder families' :class:`ModelSpec`).
    Serialised into the model folder's config."""

    family: str
    """``xlm-roberta`` (jina-reranker-v2 is its math in another weight layout), ``bert``,
    ``jina-bert`` or ``gte``."""
    num_layers: int
    hidden: int
    heads: int
    intermediate: int
    layer_norm_eps: float
    max_length: int
    """Longest sequence the model reads, special tokens included."""
    positions: Positions
    feed_forward: FeedForward
    head: Head
    pad_id: int = 1
    position_offset: int = 0
    """Learned positions: index of the first real position (XLM-R: pad_id + 1 = 2, BERT: 0)."""
    positions_from_pad: bool = False
    """XLM-R style position ids: pad tokens get ``pad_id``, real tokens count up from offset."""
    type_vocab: int = 0
    """Rows in the token-type table; 0 means the model has none."""
    type_ids_input: bool = False
    """The model reads token-type ids (BERT pairs: 0 for the query, 1 for the document)."""
    rope_base: float = 10000.0
    rope_position_scale: float = 1.0
    """RoPE: positions are divided by this before the rotation (NTK folded into linear form)."""

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> EncoderSpec:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class LoadedModel:
    """What a source reader returns: the spec, canonical weights, and provenance."""

    spec: ModelSpec
    weights: Weights
    source: str
    source_format: Literal["hf", "gguf"]
    notes: list[str] = field(default_factory=list)
    """Known deviations from the original model that the source cannot express."""
    files_sha256: dict[str, str] = field(default_factory=dict)
    source_dtype: str = "fp32"
    layout: str = ""
    """The weight layout read: a checkpoint layout's name (``xlm-roberta``, ``jina-v2``, ...) or ``gguf``."""


def alibi_slopes(heads: int) -> np.ndarray:
    """Per-head ALiBi slopes as in the ALiBi paper (and JinaBERT, and llama.cpp with max bias 8).

    For a power-of-two head count ``n`` the slopes are ``2^(-8/n * k)``, k = 1..n. Otherwise the
    closest lower power of two gets its slopes, and the rest are taken from every other slope of
    twice that count.
    """

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(np.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if np.log2(heads).is_integer():
        slopes = power_of_two(heads)
    else:
        closest = 2 ** int(np.floor(np.log2(heads)))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: heads - closest]
    return np.asarray(slopes, dtype=np.float32)
