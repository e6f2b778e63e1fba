"""JinaBERT in plain PyTorch: the converter's reference for jina-reranker-v1-*.

transformers has no JinaBERT class and the checkpoint's own modeling code is never executed,
so this module restates the published architecture (JinaBERT: BERT with symmetric ALiBi
instead of position embeddings, a GEGLU feed-forward with GELU on the first half, post-LN,
BERT pooler and a one-logit classifier). It is written as ordinary PyTorch modules, apart from
the ONNX graph builder, so that the two can check each other.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from rerank.converters.spec import LoadedModel, alibi_slopes


class JinaBertReranker(nn.Module):
    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__()
        spec = loaded.spec
        self.spec = spec
        # A copy: weights read from a GGUF are views of a read-only memory map, which torch warns about.
        self.w = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in loaded.weights.items()}
        self.slopes = torch.from_numpy(alibi_slopes(spec.heads))

    def _ln(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return nn.functional.layer_norm(
            x, (x.shape[-1],), self.w[name + ".w"], self.w[name + ".b"], self.spec.layer_norm_eps
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: object):
        s, w = self.spec, self.w
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = w["emb.word"][input_ids]
        if "emb.type" in w:
            x = x + w["emb.type"][0]
        x = self._ln(x, "emb.ln")
        batch, length, hidden = x.shape
        heads, dim = s.heads, s.head_dim
        pos = torch.arange(length)
        alibi = -self.slopes[:, None, None] * (pos[None, :] - pos[:, None]).abs()[None].float()
        pad = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        bias = alibi[None] + pad
        for i in range(s.num_layers):
            p = f"L{i}."
            qkv = x @ w[p + "qkv.w"].T + w[p + "qkv.b"]
            q, k, v = (t.view(batch, length, heads, dim).transpose(1, 2) for t in qkv.split(hidden, dim=-1))
            probs = torch.softmax(q @ k.transpose(-1, -2) / dim**0.5 + bias, dim=-1)
            ctx = (probs @ v).transpose(1, 2).reshape(batch, length, hidden)
            x = self._ln(ctx @ w[p + "o.w"].T + w[p + "o.b"] + x, p + "attn_ln")
            gated, plain = (x @ w[p + "up.w"].T).split(s.intermediate, dim=-1)
            ffn = (nn.functional.gelu(gated) * plain) @ w[p + "down.w"].T + w[p + "down.b"]
            x = self._ln(ffn + x, p + "ffn_ln")
        if s.head in ("tanh", "linear"):  # a pooler-less GGUF: llama.cpp's [tanh](cls · h0 + b)
            logits = x[:, 0] @ w["head.out.w"].T + w["head.out.b"]
            return SimpleNamespace(logits=torch.tanh(logits) if s.head == "tanh" else logits)
        pooled = torch.tanh(x[:, 0] @ w["head.dense.w"].T + w["head.dense.b"])
        return SimpleNamespace(logits=pooled @ w["head.out.w"].T + w["head.out.b"])
