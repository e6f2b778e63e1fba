"""The facts that decide a Qwen3-Reranker's math, and its canonical weight names.

Canonical names (PyTorch ``Linear`` orientation, ``[out_features, in_features]``, float32)::

    emb.word              [rows, hidden]          rows >= the tokenizer's ids (the table is padded)
    L{i}.attn_norm        [hidden]                RMSNorm before attention
    L{i}.q.w              [heads*head_dim, hidden]
    L{i}.k.w / L{i}.v.w   [kv_heads*head_dim, hidden]
    L{i}.q.b/.k.b/.v.b    optional (``attention_bias``; the published models have none)
    L{i}.q_norm/.k_norm   [head_dim]              RMSNorm of each head's query and key
    L{i}.o.w              [hidden, heads*head_dim]
    L{i}.ffn_norm         [hidden]                RMSNorm before the feed-forward
    L{i}.gate.w / .up.w   [intermediate, hidden]  SwiGLU: down(silu(gate x) * up x)
    L{i}.down.w           [hidden, intermediate]
    norm                  [hidden]                the final RMSNorm
    head.w                [2, hidden]             the LM head's rows for "no" and "yes", in that order
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from rerank.converters.fields import MAX_VOCAB, shape_text
from rerank.converters.spec import Weights

FAMILY = "qwen3"
ARCHITECTURES = ("Qwen3ForCausalLM",)
"""The checkpoints' ``architectures`` (transformers' class)."""


@dataclass(frozen=True)
class Qwen3Spec:
    """Serialised into the model folder's ``spec``. Carries the fields the shared pipeline reads
    of any spec (``family``, ``max_length``, ``pad_id``, ``type_ids_input``, ``positions``, RoPE)."""

    num_layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    rms_norm_eps: float
    rope_base: float
    max_length: int
    """Longest prompt the model folder reads, prefix and suffix included."""
    yes_id: int
    no_id: int
    pad_id: int
    attention_bias: bool = False
    family: str = FAMILY
    positions: str = "rope"
    rope_position_scale: float = 1.0
    type_ids_input: bool = False

    @property
    def groups(self) -> int:
        """Query heads per key/value head (grouped-query attention)."""
        return self.heads // self.kv_heads

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Qwen3Spec:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def check_weights(spec: Qwen3Spec, w: Weights, where: str, error: type[Exception]) -> None:
    """Refuses canonical weights whose shapes disagree with ``spec`` (a file's declared sizes are
    not trusted to match its tensors), and a spec no graph can be built for."""
    H, I, D = spec.hidden, spec.intermediate, spec.head_dim
    rows = w["emb.word"].shape[0] if w["emb.word"].ndim == 2 else 0
    if not 0 < rows <= MAX_VOCAB or max(spec.yes_id, spec.no_id, spec.pad_id) >= rows:
        raise error(f"{where}: shape {shape_text(w['emb.word'])} for the word embeddings; expected [vocabulary, {H}]")
    if spec.heads % spec.kv_heads:
        raise error(f"{where}: {spec.heads} query heads do not share {spec.kv_heads} key/value heads evenly")
    if D % 2:
        raise error(f"{where}: RoPE needs an even head dimension, not {D}")
    if not (math.isfinite(spec.rope_base) and spec.rope_base > 0):
        raise error(f"{where}: RoPE base is {spec.rope_base}; expected a positive number")
    q, kv = spec.heads * D, spec.kv_heads * D
    expected: dict[str, tuple[int, ...]] = {"emb.word": (rows, H), "norm": (H,), "head.w": (2, H)}
    for i in range(spec.num_layers):
        o = f"L{i}."
        expected |= {o + "attn_norm": (H,), o + "ffn_norm": (H,), o + "q_norm": (D,), o + "k_norm": (D,)}
        expected |= {o + "q.w": (q, H), o + "k.w": (kv, H), o + "v.w": (kv, H), o + "o.w": (H, q)}
        expected |= {o + "gate.w": (I, H), o + "up.w": (I, H), o + "down.w": (H, I)}
        if spec.attention_bias:
            expected |= {o + "q.b": (q,), o + "k.b": (kv,), o + "v.b": (kv,)}
    for name, shape in expected.items():
        value = w.get(name)
        if value is None or value.shape != shape:
            raise error(f"{where}: shape {shape_text(value)} for {name}; the model's sizes need {shape_text(shape)}")
