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

from dataclasses import asdict, dataclass

FAMILY = "qwen3"


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
