"""Infinity (``infinity-emb``) as a bench peer, in a virtual environment of its own.

``infinity-emb`` 0.0.78 cannot share ``.venv``: it pins ``numpy<2``,
``sentence-transformers<4`` (so transformers 4.x) and ``rich<14``, while our lock has numpy 2,
sentence-transformers 6 and transformers 5. So the bench installs it once into
``.cache/bench/infinity-venv`` (:data:`VENV`, the same CPU torch as ours) and runs
``infinity_emb v2 --engine torch`` from there on the bench model's checkpoint folder, served
over its ``POST /rerank``.
"""

from __future__ import annotations

from pathlib import Path

from bench.venvs import INFINITY as VENV

__all__ = ["BATCH_SIZE", "VENV", "command", "environment"]

BATCH_SIZE = 32
"""Infinity's default batch size (``--batch-size``), as sentence-transformers' ``predict``."""


def command(executable: Path, checkpoint: Path, name: str, port: int) -> list[str]:
    """``infinity_emb v2`` serving ``checkpoint`` under ``name`` on the CPU with PyTorch."""
    return [
        str(executable),
        "v2",
        "--model-id",
        str(checkpoint),
        "--served-model-name",
        name,
        "--engine",
        "torch",
        "--device",
        "cpu",
        "--batch-size",
        str(BATCH_SIZE),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def environment(threads: int) -> dict[str, str]:
    """No telemetry, no Hub, and PyTorch on ``threads`` threads like every other peer."""
    return {
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
