"""Model folders made through the real converter CLI, and a converted folder's scores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.support import REPO


def convert_with_cli(source: Path, out: Path, name: str, *options: str) -> Path:
    """``rerank-convert SOURCE --name NAME --out OUT [OPTIONS]`` through the real CLI, as a user would."""
    result = subprocess.run(
        [sys.executable, "-m", "rerank.converters.cli", str(source), "--name", name, "--out", str(out), *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out / name


def onnx_scores(folder: Path, items: list[tuple[str, str]]) -> np.ndarray:
    """Logits of a converted model folder for (query, document) pairs, one padded batch, on the CPU."""
    from rerank.service.backends.base import pad
    from rerank.service.backends.onnx import OnnxBackend
    from rerank.service.core.tokenization import PairEncoder
    from rerank.service.model_folder import read_model_folder

    config = read_model_folder(folder)
    encoder = PairEncoder(folder / "tokenizer.json", config.template, config.max_length)
    encoded = [encoder.encode(q, [d]).pairs[0] for q, d in items]
    return OnnxBackend(folder, config, device="cpu").run(pad(encoded, config.template.pad_id, config.type_ids_input))
