"""JinaBERT cross-encoder in plain numpy, written from the published description, for the tests.

JinaBERT = BERT with (1) no position table: a symmetric ALiBi bias -m_h·|i-j| added to the
attention scores, slopes as in the ALiBi paper; (2) a GEGLU feed-forward: one bias-free
projection to 2·I, GELU on the first half times the second half, then a biased projection
back; (3) post-LayerNorm (eps from the config); (4) BERT's head: pooler dense + tanh on the
first token, then a one-logit classifier. It reads the checkpoint's own tensor names and
shares no code with the converter.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def _slopes(n: int) -> np.ndarray:
    def pow2(k: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(k) - 3)))
        return [start ** (i + 1) for i in range(k)]

    if math.log2(n).is_integer():
        return np.array(pow2(n))
    closest = 2 ** math.floor(math.log2(n))
    return np.array(pow2(closest) + pow2(2 * closest)[0::2][: n - closest])


_erf = np.vectorize(math.erf)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _ln(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


class JinaBertNumpy:
    def __init__(self, folder: Path) -> None:
        self.cfg = json.loads((folder / "config.json").read_text())
        self.t = {k: v.astype(np.float64) for k, v in load_file(str(folder / "model.safetensors")).items()}

    def score(self, ids: list[int], head: str = "pooler") -> float:
        """The logit for one token sequence. ``head="tanh"``: llama.cpp's head for a GGUF whose
        pooler was dropped, tanh(classifier(h0))."""
        c, t = self.cfg, self.t
        H, N = c["hidden_size"], c["num_attention_heads"]
        D, eps = H // N, c["layer_norm_eps"]
        x = t["bert.embeddings.word_embeddings.weight"][ids] + t["bert.embeddings.token_type_embeddings.weight"][0]
        x = _ln(x, t["bert.embeddings.LayerNorm.weight"], t["bert.embeddings.LayerNorm.bias"], eps)
        n = len(ids)
        pos = np.arange(n)
        alibi = -_slopes(N)[:, None, None] * np.abs(pos[None, :, None] - pos[None, None, :])
        for i in range(c["num_hidden_layers"]):
            p = f"bert.encoder.layer.{i}."

            def lin(name: str, v: np.ndarray, p: str = p) -> np.ndarray:
                return v @ t[p + name + ".weight"].T + t[p + name + ".bias"]

            q, k, v = (
                lin(f"attention.self.{n_}", x).reshape(n, N, D).transpose(1, 0, 2) for n_ in ("query", "key", "value")
            )
            s = q @ k.transpose(0, 2, 1) / math.sqrt(D) + alibi
            s = np.exp(s - s.max(-1, keepdims=True))
            ctx = ((s / s.sum(-1, keepdims=True)) @ v).transpose(1, 0, 2).reshape(n, H)
            x = _ln(
                lin("attention.output.dense", ctx) + x,
                t[p + "attention.output.LayerNorm.weight"],
                t[p + "attention.output.LayerNorm.bias"],
                eps,
            )
            h = x @ t[p + "mlp.gated_layers.weight"].T
            inter = h.shape[-1] // 2
            h = _gelu(h[:, :inter]) * h[:, inter:]
            x = _ln(lin("mlp.wo", h) + x, t[p + "mlp.layernorm.weight"], t[p + "mlp.layernorm.bias"], eps)
        if head == "tanh":
            return float(np.tanh(x[0] @ t["classifier.weight"][0] + t["classifier.bias"][0]))
        pooled = np.tanh(x[0] @ t["bert.pooler.dense.weight"].T + t["bert.pooler.dense.bias"])
        return float(pooled @ t["classifier.weight"][0] + t["classifier.bias"][0])
