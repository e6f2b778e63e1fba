"""Scoring pairs through the serving path, for build-time tools.

Part of the service's declared surface (with :mod:`rerank.service.model_folder`): the converter proves
a graph exact, and gates its variants, by scoring through exactly what the server runs (the pair
encoder, right padding and the backend), one pair at a time, so batching cannot hide a
difference.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rerank.service.backends.base import graph_feed, pad
from rerank.service.backends.loader import load_backend
from rerank.service.backends.loader import runtime_available as _runtime_available
from rerank.service.core.tokenization import PairEncoder
from rerank.service.model_folder import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS, ModelFolderConfig, Variant


def score_pairs(
    folder: Path,
    config: ModelFolderConfig,
    pairs: Sequence[tuple[str, str]],
    *,
    file: str = "model.onnx",
    device: str = "cpu",
    variant: Variant | None = None,
    instruction: str | None = None,
) -> np.ndarray:
    """float64 logits for each (query, document) pair: of ``variant`` (its file, on its runtime
    and precision) when given, else of the graph ``folder/file`` on ONNX Runtime; with
    ``instruction`` for a model that takes one."""
    encoder = PairEncoder(folder / "tokenizer.json", config.template, config.max_length)
    probe = dataclasses.replace(config, variants={"probe": variant or Variant(file=file, precision="?")})
    backend = load_backend(folder, probe, variant="probe", device=device, threads=None)
    scores = []
    for query, document in pairs:
        encoded = encoder.encode(query, [document], instruction=instruction)
        batch = pad(encoded.pairs, config.template.pad_id, config.type_ids_input)
        scores.append(float(backend.run(batch)[0]))
    return np.asarray(scores, dtype=np.float64)


def pair_ids(
    folder: Path, config: ModelFolderConfig, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None
) -> list[list[int]]:
    """The token ids the server feeds the model for each (query, document) pair (the first
    sequence of each: the whole pair, or its truncated head), with ``instruction`` for a model
    that takes one: what the converter checks against the original model's own tokenization."""
    encoder = PairEncoder(folder / "tokenizer.json", config.template, config.max_length)
    return [encoder.encode(q, [d], instruction=instruction).pairs[0].ids.tolist() for q, d in pairs]


def padded_batches(
    folder: Path,
    config: ModelFolderConfig,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_pairs: int = 8,
    inputs: Collection[str] = (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS),
) -> list[dict[str, np.ndarray]]:
    """``pairs`` as the server feeds them: encoded, sorted by length, right-padded, in batches of
    ``batch_pairs``; each the feed of a graph with ``inputs`` (:func:`graph_feed`; token type ids
    only for a model that reads them). Calibration data for static quantisation."""
    encoder = PairEncoder(folder / "tokenizer.json", config.template, config.max_length)
    encoded = [pair for query, document in pairs for pair in encoder.encode(query, [document]).pairs]
    encoded.sort(key=lambda pair: len(pair.ids))
    if not config.type_ids_input:
        inputs = [name for name in inputs if name != TOKEN_TYPE_IDS]
    return [
        graph_feed(pad(encoded[start : start + batch_pairs], config.template.pad_id, config.type_ids_input), inputs)
        for start in range(0, len(encoded), batch_pairs)
    ]


def runtime_available(runtime: str) -> bool:
    """Whether ``runtime`` (``onnxruntime``, ``openvino``) is installed, so its variants can be scored."""
    return _runtime_available(runtime)


def runs_natively(variant: Variant) -> bool:
    """Whether this machine's CPU has the units ``variant``'s precision needs (bf16: AMX-BF16 or
    AVX-512 BF16; OpenVINO int8: VNNI or AMX-INT8). Without them a runtime computes something
    else (OpenVINO runs a bf16 hint in f32), so a gate measured here would not be the variant's."""
    from rerank.service.backends.cpu_features import detect
    from rerank.service.backends.loader import runs_natively as native

    return native(variant, detect())


def time_variants(folder: Path, config: ModelFolderConfig, keys: Sequence[str]) -> dict[str, Any]:
    """The timing table a server on this CPU chooses from (:attr:`ModelFolderConfig.speed`):
    each of ``keys`` timed as the server times its candidates, on every core."""
    from rerank.service.backends.cpu_features import detect
    from rerank.service.backends.loader import cpu_signature, measure, timing_batch

    backends = {key: load_backend(folder, config, variant=key, device="cpu", threads=None) for key in keys}
    best = measure(backends, config)
    shape = timing_batch(config).input_ids.shape
    return {
        "cpu": cpu_signature(detect()),
        "batch": [int(shape[0]), int(shape[1])],
        "threads": os.cpu_count() or 1,
        "milliseconds": {key: round(seconds * 1e3, 3) for key, seconds in best.items()},
    }
