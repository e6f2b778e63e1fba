"""Infinity (``infinity-emb``) as a bench peer, in a virtual environment of its own.

``infinity-emb`` 0.0.78 cannot share ``.venv``: it pins ``numpy<2``,
``sentence-transformers<4`` (so transformers 4.x) and ``rich<14``, while our lock has numpy 2,
sentence-transformers 6 and transformers 5 (pip's resolver finds no common set). So the bench
installs it once into ``.cache/bench/infinity-venv`` (:func:`ensure_venv`, a few minutes, from
the same package index; the same CPU torch as ours) and runs ``infinity_emb v2 --engine torch``
from there on the bench model's checkpoint folder, served over its ``POST /rerank``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.models import CACHE

VENV = CACHE / "infinity-venv"
PACKAGES = ("infinity-emb[server,torch]==0.0.78",)
BATCH_SIZE = 32
"""Infinity's default batch size (``--batch-size``), as sentence-transformers' ``predict``."""


def _torch_pin() -> str:
    """Our own torch's version, so that both PyTorch peers run the same kernels."""
    from importlib.metadata import version

    return f"torch=={version('torch')}"


def ensure_venv(log=print) -> Path:  # type: ignore[no-untyped-def]
    """The ``infinity_emb`` executable, installing the virtual environment when it is missing."""
    executable = VENV / "bin" / "infinity_emb"
    if executable.exists():
        return executable
    log(f"infinity: creating {VENV} (its pins conflict with .venv's; a few minutes, once)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    result = subprocess.run([*pip, *PACKAGES, _torch_pin()], capture_output=True, text=True)
    if result.returncode != 0 or not executable.exists():
        raise RuntimeError(f"installing infinity-emb failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return executable


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
