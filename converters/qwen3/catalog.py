"""The published Qwen3-Reranker models, as catalog entries (fields of
:class:`rerank.converters.families.base.CatalogEntry`, which
:mod:`rerank.converters.families.qwen3` registers).

Downloads are the Hub checkpoints' (bf16 safetensors). The first-run cost is ``rerank-convert``'s
on a CPU, in CPU time (wall time on N free cores is about CPU time / N): measured on the
0.6B-shaped fixture (``converters/testing/qwen3.py``: the 0.6B model's 28 layers exactly, with a
3k-token vocabulary instead of 151k, so 444M parameters): peak RSS 8.5 GB and 6.3 CPU-minutes
to convert and verify the exact graph (``--variants none``), and 17.5 CPU-minutes for one pass
over the 309 gate pairs, which every variant's gate takes once (the default variants: 7 to 10
passes). Memory scales with all parameters (0.55 GB + 17.8 bytes each: the real 0.6B's embedding
table adds about 2.5 GB), time with the layers' (x8.2 for 4B, x15.8 for 8B); the 4B and 8B
figures are those scalings, not measurements. GGUF repositories: ggml-org's build of 0.6B was
made by llama.cpp's own converter after its Qwen3-Reranker support (``cls.output`` holds the
yes/no rows); the 4B and 8B ones are community builds whose layout was not checked here (the
reader takes either layout).
"""

from __future__ import annotations

from typing import Any

FIRST_RUN = (
    "LLM reranker, takes an instruction; downloads {download}; converting needs about {memory} of memory and "
    "{verify} of CPU time for the exact graph, plus {gate} per variant gate ({estimated}; --variants none skips them)"
)

ENTRIES: list[dict[str, Any]] = [
    {
        "name": "Qwen3-Reranker-0.6B",
        "hub_repo": "Qwen/Qwen3-Reranker-0.6B",
        "gguf_repo": "ggml-org/Qwen3-Reranker-0.6B-Q8_0-GGUF",
        "architecture": "qwen3",
        "params": "0.6B",
        "max_length": 8192,
        "licence": "apache-2.0",
        "notes": FIRST_RUN.format(
            download="1.2 GB", memory="11 GB", verify="6 min", gate="18 min", estimated="measured at its shape"
        ),
    },
    {
        "name": "Qwen3-Reranker-4B",
        "hub_repo": "Qwen/Qwen3-Reranker-4B",
        "gguf_repo": "Voodisss/Qwen3-Reranker-4B-GGUF-llama_cpp",
        "architecture": "qwen3",
        "params": "4B",
        "max_length": 8192,
        "licence": "apache-2.0",
        "notes": FIRST_RUN.format(
            download="8.0 GB", memory="72 GB", verify="50 min", gate="2.4 h", estimated="estimated"
        )
        + "; GGUF: a community build",
    },
    {
        "name": "Qwen3-Reranker-8B",
        "hub_repo": "Qwen/Qwen3-Reranker-8B",
        "gguf_repo": "gorse-io/Qwen3-Reranker-8B-GGUF",
        "architecture": "qwen3",
        "params": "8B",
        "max_length": 8192,
        "licence": "apache-2.0",
        "notes": FIRST_RUN.format(
            download="16 GB", memory="146 GB", verify="1.6 h", gate="4.6 h", estimated="estimated"
        )
        + "; GGUF: a community build",
    },
]
