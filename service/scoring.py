"""Scoring pairs through the serving path, for build-time tools.

Part of the service's declared surface (with :mod:`service.model_folder`): the converter proves
a graph exact, and gates its variants, by scoring through exactly what the server runs (the pair
encoder, right padding and the backend), one pair at a time, so batching cannot hide a
difference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.backends.loader import load_backend
from service.core.batching import pad
from service.core.tokenization import PairEncoder
from service.model_folder import ModelFolderConfig, Variant


def score_pairs(
    folder: Path,
    config: ModelFolderConfig,
    pairs: Sequence[tuple[str, str]],
    *,
    file: str = "model.onnx",
    device: str = "cpu",
) -> np.ndarray:
    """float64 logits of the graph ``folder/file`` for each (query, document) pair."""
    encoder = PairEncoder(folder / "tokenizer.json", config.template, config.max_length)
    probe = dataclasses.replace(config, variants={"probe": Variant(file=file, precision="?")})
    backend = load_backend(folder, probe, variant="probe", device=device, threads=None)
    scores = []
    for query, document in pairs:
        encoded = encoder.encode(query, [document])
        batch = pad(encoded.pairs, config.template.pad_id, config.type_ids_input)
        scores.append(float(backend.run(batch)[0]))
    return np.asarray(scores, dtype=np.float64)
