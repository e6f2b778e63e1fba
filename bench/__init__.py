"""Benchmark of the reranking service against sentence-transformers and llama.cpp's llama-server.

Run ``python -m bench.run --help``. Not a test: it takes minutes and writes ``bench/results/``.
"""
